package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Limits of the performance targets.
const (
	// targetConns is the connection count at which the sidecar must match
	// nginx.
	targetConns = 64
	// maxPeakRSSKiB and maxIdleRSSKiB bound the sidecar's memory.
	maxPeakRSSKiB = 64 << 10
	maxIdleRSSKiB = 20 << 10
	// minExpiringThroughput is the share of the long-lifetime sidecar's
	// throughput that the expiring one must reach at every connection
	// count. Runs of the same binary differ by a few percent on a shared
	// 2-core machine, so a real dip must exceed 10%.
	minExpiringThroughput = 0.9
	// maxExpiringP999Ratio and expiringP999Slack bound the expiring
	// sidecar's p99.9 at ratio × long + slack. A request that waited for a
	// token request would add at least the token endpoint's latency.
	maxExpiringP999Ratio = 1.5
	expiringP999Slack    = time.Millisecond
)

// memoryUse is a proxy's resident memory in KiB.
type memoryUse struct {
	idleKiB, afterKiB, peakKiB int64
}

// report turns the measurements into Markdown and checks the targets.
type report struct {
	opts     options
	machine  machine
	points   []point
	memory   map[string]memoryUse
	counters map[string]sidecarCounters
	// checks are filled by evaluate.
	checks []targetCheck
}

// targetCheck is one performance target with its measured value.
type targetCheck struct {
	name     string
	measured string
	met      bool
}

func (r *report) find(target, body string, conns int) (point, bool) {
	for _, p := range r.points {
		if p.target == target && p.body == body && p.conns == conns {
			return p, true
		}
	}
	return point{}, false
}

func (r *report) markdown() string {
	r.evaluate()
	var b strings.Builder
	fmt.Fprintf(&b, "## Run of %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Command: `%s`. Each point: %d rounds of %v of load, each after %v of warm-up, by wrk with keep-alive connections and one thread per core (at most one per connection). The rounds of a point are interleaved with the other paths at the same connection count; throughput is their mean and each percentile their median.\n\n",
		commandLine(), r.opts.rounds, r.opts.duration, r.opts.warmup)
	m := r.machine
	fmt.Fprintf(&b, "Machine: %d cores (%s), %s memory, Linux %s, %s, %s, %s.\n\n",
		m.cores, m.cpuModel, m.memory, m.kernel, m.goVersion, m.nginx, m.wrk)
	fmt.Fprintf(&b, "Load average (1, 5, 15 minutes) before the load: %s; after: %s.\n\n", m.loadBefore, m.loadAfter)
	b.WriteString("wrk, the proxy and the upstream share the cores, so the numbers compare the paths with each other on this machine; they are not capacity figures. Added latency is the path's percentile minus the direct path's at the same point. Proxy CPU is user plus system time from /proc/PID/stat (nginx: master and workers), per 10,000 requests; the upstream's CPU, a Go net/http server that only responds, gives the scale of Go's per-request cost on the machine.\n\n")

	for _, body := range bodies {
		fmt.Fprintf(&b, "### %s body\n\n", bodyTitle(body.name))
		b.WriteString("| connections | path | req/s | p50 | p99 | p99.9 | added p50 | added p99 | proxy CPU s / 10k req | upstream CPU s / 10k req |\n")
		b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, conns := range r.opts.conns {
			direct, _ := r.find(targetDirect, body.name, conns)
			for _, p := range r.points {
				if p.body != body.name || p.conns != conns {
					continue
				}
				res := p.result
				added50, added99 := "", ""
				if p.target != targetDirect {
					added50 = signedMillis(res.P50 - direct.result.P50)
					added99 = signedMillis(res.P99 - direct.result.P99)
				}
				fmt.Fprintf(&b, "| %d | %s | %.0f | %s | %s | %s | %s | %s | %s | %.2f |\n",
					conns, p.target, res.RequestsPerSecond(), millis(res.P50), millis(res.P99), millis(res.P999),
					added50, added99, cpuPer10k(p), p.upstreamCPUSeconds/float64(max(res.Requests, 1))*10000)
			}
		}
		b.WriteString("\n")
	}

	b.WriteString("### Ratios\n\n")
	b.WriteString("Throughput and CPU ratios of each sidecar to nginx and to the direct path; above 1 means the sidecar serves more requests per second or spends more CPU per request.\n\n")
	b.WriteString("| body | connections | sidecar | req/s ÷ nginx | req/s ÷ direct | p99 ÷ nginx | CPU per request ÷ nginx |\n")
	b.WriteString("|---|---:|---|---:|---:|---:|---:|\n")
	for _, body := range bodies {
		for _, conns := range r.opts.conns {
			nginx, _ := r.find(targetNginx, body.name, conns)
			direct, _ := r.find(targetDirect, body.name, conns)
			for _, name := range []string{targetLong, targetExpiring} {
				s, _ := r.find(name, body.name, conns)
				fmt.Fprintf(&b, "| %s | %d | %s | %.2f | %.2f | %.2f | %.2f |\n", body.name, conns, name,
					ratio(s.result.RequestsPerSecond(), nginx.result.RequestsPerSecond()),
					ratio(s.result.RequestsPerSecond(), direct.result.RequestsPerSecond()),
					ratio(s.result.P99.Seconds(), nginx.result.P99.Seconds()),
					ratio(cpuPerRequest(s), cpuPerRequest(nginx)))
			}
		}
	}
	b.WriteString("\n")

	b.WriteString("### Memory\n\n")
	b.WriteString("Resident memory from /proc/PID/status: VmRSS 1 s after start (idle), VmRSS after the last point, and VmHWM (peak). For nginx the values are summed over the master and its workers, which counts shared pages more than once.\n\n")
	b.WriteString("| proxy | idle RSS | RSS after load | peak RSS |\n|---|---:|---:|---:|\n")
	for _, name := range []string{targetNginx, targetLong, targetExpiring} {
		mem := r.memory[name]
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, mebibytes(mem.idleKiB), mebibytes(mem.afterKiB), mebibytes(mem.peakKiB))
	}
	b.WriteString("\n")

	b.WriteString("### Sidecar counters during the load\n\n")
	b.WriteString("| sidecar | token fetches | failed token fetches | 401 replays | error responses (4xx, 5xx except 499) |\n|---|---:|---:|---:|---:|\n")
	for _, name := range []string{targetLong, targetExpiring} {
		c := r.counters[name]
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.0f | %.0f |\n", name, c.fetchSuccess, c.fetchFailure, c.replays, c.errorResponses)
	}
	b.WriteString("\n")

	b.WriteString("### Targets\n\n| target | measured | result |\n|---|---|---|\n")
	for _, c := range r.checks {
		result := "met"
		if !c.met {
			result = "**missed**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", c.name, c.measured, result)
	}
	b.WriteString("\n")
	return b.String()
}

// evaluate fills r.checks from the measurements.
func (r *report) evaluate() {
	r.checks = nil
	const body = "small"
	if long, ok := r.find(targetLong, body, targetConns); ok {
		nginx, _ := r.find(targetNginx, body, targetConns)
		direct, _ := r.find(targetDirect, body, targetConns)
		lr, nr := long.result.RequestsPerSecond(), nginx.result.RequestsPerSecond()
		r.checks = append(r.checks, targetCheck{
			name:     fmt.Sprintf("throughput at %d connections, small body, at least nginx's", targetConns),
			measured: fmt.Sprintf("%.0f req/s vs %.0f (%.2f×)", lr, nr, ratio(lr, nr)),
			met:      lr >= nr,
		})
		la, na := long.result.P99-direct.result.P99, nginx.result.P99-direct.result.P99
		r.checks = append(r.checks, targetCheck{
			name:     fmt.Sprintf("added p99 at %d connections, small body, at most nginx's", targetConns),
			measured: fmt.Sprintf("%s vs %s", signedMillis(la), signedMillis(na)),
			met:      la <= na,
		})
	}

	var worstRatio = 1e9
	var worstRatioConns int
	var worstP999 string
	p999Met := true
	for _, conns := range r.opts.conns {
		long, ok1 := r.find(targetLong, body, conns)
		exp, ok2 := r.find(targetExpiring, body, conns)
		if !ok1 || !ok2 {
			continue
		}
		if q := ratio(exp.result.RequestsPerSecond(), long.result.RequestsPerSecond()); q < worstRatio {
			worstRatio, worstRatioConns = q, conns
		}
		limit := time.Duration(float64(long.result.P999)*maxExpiringP999Ratio) + expiringP999Slack
		if exp.result.P999 > limit {
			p999Met = false
			worstP999 += fmt.Sprintf("%s > %s at %d connections; ", millis(exp.result.P999), millis(limit), conns)
		}
	}
	if worstRatioConns > 0 {
		r.checks = append(r.checks, targetCheck{
			name:     fmt.Sprintf("no throughput dip with expiring tokens, small body (at least %.0f%% of the long lifetime's at every connection count)", minExpiringThroughput*100),
			measured: fmt.Sprintf("lowest %.2f× at %d connections", worstRatio, worstRatioConns),
			met:      worstRatio >= minExpiringThroughput,
		})
		measured := "within the limit at every connection count"
		if !p999Met {
			measured = strings.TrimSuffix(worstP999, "; ")
		}
		r.checks = append(r.checks, targetCheck{
			name:     fmt.Sprintf("no p99.9 spike with expiring tokens, small body (at most %.1f× the long lifetime's + %v)", maxExpiringP999Ratio, expiringP999Slack),
			measured: measured,
			met:      p999Met,
		})
	}

	for _, name := range []string{targetLong, targetExpiring} {
		mem, ok := r.memory[name]
		if !ok {
			continue
		}
		r.checks = append(r.checks,
			targetCheck{
				name:     fmt.Sprintf("%s peak RSS under %s", name, mebibytes(maxPeakRSSKiB)),
				measured: mebibytes(mem.peakKiB),
				met:      mem.peakKiB < maxPeakRSSKiB,
			},
			targetCheck{
				name:     fmt.Sprintf("%s idle RSS under %s", name, mebibytes(maxIdleRSSKiB)),
				measured: mebibytes(mem.idleKiB),
				met:      mem.idleKiB < maxIdleRSSKiB,
			})
	}
}

// missedTargets returns the number of targets not met.
func (r *report) missedTargets() int {
	n := 0
	for _, c := range r.checks {
		if !c.met {
			n++
		}
	}
	return n
}

// checkCounters returns an error when the sidecars' counters show that
// the load did not test what it should: a token refresh during the
// expiring run, and no failed fetch, replay or error response anywhere.
func (r *report) checkCounters() error {
	var errs []error
	for _, name := range []string{targetLong, targetExpiring} {
		c := r.counters[name]
		if c.fetchFailure > 0 {
			errs = append(errs, fmt.Errorf("%s: %.0f token fetches failed during the load", name, c.fetchFailure))
		}
		if c.replays > 0 {
			errs = append(errs, fmt.Errorf("%s: the upstream responded with 401 %.0f times during the load", name, c.replays))
		}
		if c.errorResponses > 0 {
			errs = append(errs, fmt.Errorf("%s: %.0f responses with status 400 or more during the load", name, c.errorResponses))
		}
	}
	if r.counters[targetExpiring].fetchSuccess == 0 {
		errs = append(errs, fmt.Errorf("%s fetched no token during the load, so it did not test token expiry", targetExpiring))
	}
	return errors.Join(errs...)
}

func bodyTitle(name string) string {
	if name == "small" {
		return fmt.Sprintf("Small (%d-byte)", len(smallBody))
	}
	return "64 KiB"
}

func millis(d time.Duration) string { return fmt.Sprintf("%.2f ms", d.Seconds()*1000) }

func signedMillis(d time.Duration) string { return fmt.Sprintf("%+.2f ms", d.Seconds()*1000) }

func mebibytes(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// cpuPerRequest returns the proxy's CPU seconds per request, or 0 for the
// direct path.
func cpuPerRequest(p point) float64 {
	if p.cpuSeconds < 0 || p.result.Requests == 0 {
		return 0
	}
	return p.cpuSeconds / float64(p.result.Requests)
}

func cpuPer10k(p point) string {
	if p.cpuSeconds < 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", cpuPerRequest(p)*10000)
}

// commandLine reconstructs the harness's command line for the report.
func commandLine() string {
	args := append([]string{"go run ./cmd/bench"}, os.Args[1:]...)
	return strings.Join(args, " ")
}
