package tokencache

import (
	"math/rand/v2"
	"time"
)

// refreshDelay returns how long after it was obtained a token of the given
// lifetime should be replaced. The token is reused for ratio of its
// lifetime, minus up to 5% of the lifetime as jitter so that many sidecars
// started together spread their requests, but at least margin before it
// expires. The margin is capped at half the lifetime, so that even a token
// shorter than twice the margin is reused for half its life rather than
// refreshed at once.
func refreshDelay(lifetime time.Duration, ratio float64, margin time.Duration, jitter float64) time.Duration {
	ahead := time.Duration(float64(lifetime) * (1 - ratio))
	ahead += time.Duration(float64(lifetime) * 0.05 * jitter)
	ahead = max(ahead, margin)
	ahead = min(ahead, lifetime/2)
	return lifetime - ahead
}

// expiryLeeway returns how long before expiry a token stops being handed
// out: the configured leeway, capped at a quarter of the lifetime so that a
// very short-lived token is still usable for most of its life.
func expiryLeeway(lifetime, leeway time.Duration) time.Duration {
	return min(leeway, lifetime/4)
}

// backoff returns the wait before retry number failures (1 for the first
// retry): retryMin doubled per failure up to retryMax, then scaled by a
// random factor in [0.5, 1) so that sidecars retrying together spread out.
func backoff(failures int, retryMin, retryMax time.Duration, jitter float64) time.Duration {
	d := retryMin
	for i := 1; i < failures && d < retryMax; i++ {
		d *= 2
	}
	d = min(d, retryMax)
	return time.Duration(float64(d) * (0.5 + jitter/2))
}

// randomFraction returns a pseudo-random number in [0, 1).
func randomFraction() float64 { return rand.Float64() }
