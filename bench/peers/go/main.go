// gopeer: the ceiling's task loop (bench/src/bin/ceiling.rs) written in Go
// on nats.go's jetstream package, as a peer for bin/bench.
//
//   - `gopeer worker --mode plain|kept` recreates the streams GOPT (WorkQueue,
//     gop.tasks.>) and GOPR (Limits, gop.results.>), binds one durable pull
//     consumer with explicit acks, and for each task publishes the payload
//     back to the subject in the task's Ceil-Reply header, then acks.
//     plain: the result is a core publish, acked at once. kept: the result
//     is a JetStream publish (PublishAsync) captured by GOPR, and the task is
//     acked when its PubAck is back (pipelined, never one at a time).
//   - `gopeer submit --mode plain|kept -n N --window W --size S` publishes N
//     tasks with PublishMsgAsync (every PubAck checked), at most W without a
//     result, collects every result on a core subscription (an inbox, or
//     gop.results.<run>.>) and prints one JSON line: tasks, seconds,
//     tasks_per_s, latency_us, steady_tasks_per_s (the rate between the
//     10%-th and the 90%-th result).
//
// The worker prints `gopeer worker ready` on standard error once it pulls.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	tasksStream   = "GOPT"
	resultsStream = "GOPR"
	taskSubject   = "gop.tasks.echo"
	replyHeader   = "Ceil-Reply"
	// Most results of a kept worker without a PubAck; matches the consumer's
	// max_ack_pending so the publisher never stalls before the server does.
	maxAckPending = 20_000
)

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  gopeer [--nats-url URL] worker [--mode plain|kept]
  gopeer [--nats-url URL] submit [--mode plain|kept] [-n N] [--window W] [--size S] [--stall-secs S]`)
	os.Exit(2)
}

func main() {
	global := flag.NewFlagSet("gopeer", flag.ExitOnError)
	url := global.String("nats-url", "nats://127.0.0.1:4222", "NATS server URL")
	global.Usage = usage
	_ = global.Parse(os.Args[1:])
	if global.NArg() < 1 {
		usage()
	}
	cmd, rest := global.Arg(0), global.Args()[1:]

	sub := flag.NewFlagSet(cmd, flag.ExitOnError)
	mode := sub.String("mode", "plain", "plain: results by core publish; kept: results kept by a Limits stream, ack after PubAck")
	var err error
	switch cmd {
	case "worker":
		_ = sub.Parse(rest)
		checkMode(*mode)
		err = worker(*url, *mode)
	case "submit":
		tasks := sub.Int("n", 20_000, "number of tasks")
		window := sub.Int("window", 256, "most tasks without a result at once")
		size := sub.Int("size", 100, "payload bytes per task")
		stallSecs := sub.Int("stall-secs", 30, "give up when no result arrives for this many seconds")
		_ = sub.Parse(rest)
		checkMode(*mode)
		err = submit(*url, *mode, *tasks, max(*window, 1), *size, time.Duration(*stallSecs)*time.Second)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gopeer:", err)
		os.Exit(1)
	}
}

func checkMode(mode string) {
	if mode != "plain" && mode != "kept" {
		fmt.Fprintf(os.Stderr, "gopeer: --mode must be plain or kept, not %q\n", mode)
		os.Exit(2)
	}
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gopeer: "+format+"\n", args...)
	os.Exit(1)
}

func recreateStreams(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	for _, name := range []string{tasksStream, resultsStream} {
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, err
		}
	}
	tasks, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      tasksStream,
		Subjects:  []string{"gop.tasks.>"},
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.FileStorage,
	})
	if err != nil {
		return nil, err
	}
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      resultsStream,
		Subjects:  []string{"gop.results.>"},
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
	})
	return tasks, err
}

// kept pairs a task with the PubAck of its result.
type kept struct {
	ack jetstream.PubAckFuture
	msg jetstream.Msg
}

func worker(url, mode string) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(maxAckPending),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tasks, err := recreateStreams(ctx, js)
	if err != nil {
		return err
	}
	consumer, err := tasks.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       "gop",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: maxAckPending,
	})
	if err != nil {
		return err
	}
	messages, err := consumer.Messages()
	if err != nil {
		return err
	}
	defer messages.Stop()
	fmt.Fprintf(os.Stderr, "gopeer worker ready (mode %s)\n", mode)

	// Kept mode: tasks whose result's PubAck is on its way, acked in order by
	// one goroutine (PubAcks come back in publish order).
	var pending chan kept
	if mode == "kept" {
		pending = make(chan kept, maxAckPending)
		go func() {
			for k := range pending {
				select {
				case <-k.ack.Ok():
					if err := k.msg.Ack(); err != nil {
						fatal("ack: %v", err)
					}
				case err := <-k.ack.Err():
					fatal("result publish: %v", err)
				}
			}
		}()
	}

	for {
		msg, err := messages.Next()
		if err != nil {
			return err
		}
		reply := msg.Headers().Get(replyHeader)
		if reply == "" {
			_ = msg.Ack() // not ours: drop it
			continue
		}
		if mode == "plain" {
			if err := nc.Publish(reply, msg.Data()); err != nil {
				return err
			}
			if err := msg.Ack(); err != nil {
				return err
			}
			continue
		}
		ack, err := js.PublishAsync(reply, msg.Data())
		if err != nil {
			return err
		}
		pending <- kept{ack, msg}
	}
}

func submit(url, mode string, total, window, size int, stall time.Duration) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc,
		// A result can come back before its task's PubAck: room for more
		// PubAcks than the window so the publisher never stalls on them.
		jetstream.WithPublishAsyncMaxPending(max(4*window, 4096)),
		jetstream.WithPublishAsyncTimeout(30*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			fatal("task publish: %v", err)
		}))
	if err != nil {
		return err
	}
	var prefix string
	if mode == "plain" {
		prefix = nc.NewRespInbox() + "."
	} else {
		prefix = fmt.Sprintf("gop.results.r%dx%d.", os.Getpid(), time.Now().UnixNano())
	}
	results, err := nc.SubscribeSync(prefix + ">")
	if err != nil {
		return err
	}
	if err := results.SetPendingLimits(-1, -1); err != nil {
		return err
	}
	if err := nc.Flush(); err != nil {
		return err
	}

	payload := []byte(strings.Repeat("x", size))
	// Task number to publish instant: at most `window` entries.
	sentAt := make(map[int]time.Time, window)
	latencies := make([]int64, 0, total) // microseconds
	doneAt := make([]time.Duration, 0, total)
	next, inFlight, done := 0, 0, 0
	started := time.Now()
	for done < total {
		for inFlight < window && next < total {
			next++
			msg := &nats.Msg{Subject: taskSubject, Header: nats.Header{}, Data: payload}
			msg.Header.Set(replyHeader, prefix+strconv.Itoa(next))
			sentAt[next] = time.Now()
			if _, err := js.PublishMsgAsync(msg); err != nil {
				return err
			}
			inFlight++
		}
		msg, err := results.NextMsg(stall)
		if errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("stalled: %d of %d results after %v", done, total, time.Since(started))
		} else if err != nil {
			return err
		}
		n, _ := strconv.Atoi(msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:])
		if at, ok := sentAt[n]; ok {
			delete(sentAt, n)
			now := time.Now()
			latencies = append(latencies, now.Sub(at).Microseconds())
			doneAt = append(doneAt, now.Sub(started))
			inFlight--
			done++
		}
	}
	seconds := time.Since(started).Seconds()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		return errors.New("PubAcks still missing after 30s")
	}

	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	summary := report{
		Mode:      mode,
		Tasks:     total,
		Window:    window,
		Seconds:   seconds,
		TasksPerS: float64(total) / seconds,
		Latency: latency{
			P50:  quantile(latencies, 0.5),
			P99:  quantile(latencies, 0.99),
			P999: quantile(latencies, 0.999),
			Max:  latencies[len(latencies)-1],
		},
		SteadyTasksPerS: steady(doneAt),
	}
	line, err := json.Marshal(summary)
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	return nil
}

// report is the one JSON line of `submit`, in the ceiling's field order.
type report struct {
	Mode            string  `json:"mode"`
	Tasks           int     `json:"tasks"`
	Window          int     `json:"window"`
	Seconds         float64 `json:"seconds"`
	TasksPerS       float64 `json:"tasks_per_s"`
	Latency         latency `json:"latency_us"`
	SteadyTasksPerS float64 `json:"steady_tasks_per_s"`
}

type latency struct {
	P50  int64 `json:"p50"`
	P99  int64 `json:"p99"`
	P999 int64 `json:"p999"`
	Max  int64 `json:"max"`
}

// quantile of sorted values: the smallest value with at least q of all at or
// below it.
func quantile(sorted []int64, q float64) int64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// steady is the rate between the 10%-th and the 90%-th result: (0.8 N) / (t90 - t10).
func steady(doneAt []time.Duration) float64 {
	n := len(doneAt)
	i10 := max(int(math.Ceil(0.1*float64(n)))-1, 0)
	i90 := max(int(math.Ceil(0.9*float64(n)))-1, 0)
	span := (doneAt[i90] - doneAt[i10]).Seconds()
	if span <= 0 {
		return 0
	}
	return 0.8 * float64(n) / span
}
