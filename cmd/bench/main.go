// Command bench compares the sidecar's throughput, latency, CPU and memory
// with nginx doing the same job and with a direct connection to the
// upstream. Everything it starts listens on 127.0.0.1, and every process
// it starts is stopped before it exits.
//
// It starts a fast upstream (this binary in a subprocess), two Taskmaster
// token endpoints, nginx with a static Authorization header, and the
// sidecar twice. One sidecar gets tokens that last an hour, the other
// tokens that expire every 3 seconds. Then the harness loads each path
// with wrk at several keep-alive connection counts, round-robin per count,
// and prints a Markdown report on stdout. Progress goes to stderr.
//
// Usage:
//
//	go run ./cmd/bench [-quick] [-out FILE] [-strict]
//	go run ./cmd/bench -profile DIR
//
// It needs nginx and wrk in PATH or /usr/sbin; scripts/bench.sh installs
// them when missing. With -profile it runs the sidecar's handler in this
// process instead and writes CPU and allocation profiles to DIR.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options contains the parsed command line.
type options struct {
	quick    bool
	out      string
	strict   bool
	profile  string
	duration time.Duration
	warmup   time.Duration
	conns    []int
	rounds   int
	timeout  time.Duration
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == upstreamFlag {
		if err := serveUpstream(os.Args[2]); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	opts, err := parseOptions(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	if opts.profile != "" {
		err = runProfile(ctx, opts)
	} else {
		err = runBench(ctx, opts, os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// upstreamFlag makes the binary run the upstream server instead of the
// harness. The harness passes it to its own executable.
const upstreamFlag = "-serve-upstream"

func parseOptions(args []string, output io.Writer) (options, error) {
	var opts options
	var conns string
	flags := flag.NewFlagSet("bench", flag.ContinueOnError)
	flags.SetOutput(output)
	flags.BoolVar(&opts.quick, "quick", false, "short run to check that the harness works: 2s per point after a 1s warm-up, unless -duration or -warmup is set")
	flags.StringVar(&opts.out, "out", "", "also write the Markdown report to this file")
	flags.BoolVar(&opts.strict, "strict", false, "exit with status 1 when a performance target is missed")
	flags.StringVar(&opts.profile, "profile", "", "instead of the comparison, run the sidecar's handler in this process at each -conns count and write CPU, heap and allocation profiles to this directory")
	flags.DurationVar(&opts.duration, "duration", 10*time.Second, "measured load per point, whole seconds")
	flags.DurationVar(&opts.warmup, "warmup", 2*time.Second, "unmeasured load before each point, whole seconds")
	flags.StringVar(&conns, "conns", "1,16,64,256", "comma-separated keep-alive connection counts")
	flags.IntVar(&opts.rounds, "rounds", 1, "measured runs per point, interleaved with the other paths; latency percentiles are the median of the rounds")
	flags.DurationVar(&opts.timeout, "timeout", 30*time.Minute, "limit for the whole run; every process is stopped when it passes")
	if err := flags.Parse(args); err != nil {
		return options{}, err
	}
	if flags.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q; all settings are flags", flags.Args())
	}

	set := map[string]bool{}
	flags.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if opts.quick {
		if !set["duration"] {
			opts.duration = 2 * time.Second
		}
		if !set["warmup"] {
			opts.warmup = time.Second
		}
	}

	if opts.duration < time.Second {
		return options{}, fmt.Errorf("invalid -duration %v: wrk needs at least 1s", opts.duration)
	}
	if opts.rounds < 1 {
		return options{}, fmt.Errorf("invalid -rounds %d: use 1 or more", opts.rounds)
	}
	if opts.warmup < 0 {
		return options{}, fmt.Errorf("invalid -warmup %v: use 0s or more", opts.warmup)
	}
	for field := range strings.SplitSeq(conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(field))
		if err != nil || n < 1 {
			return options{}, fmt.Errorf("invalid -conns entry %q: use positive integers such as 1,16,64,256", field)
		}
		opts.conns = append(opts.conns, n)
	}
	return opts, nil
}

// progress prints a progress line to stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
