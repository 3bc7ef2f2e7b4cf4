// Package proxy forwards requests to one upstream with
// net/http/httputil.ReverseProxy, replacing any inbound Authorization with
// the cached Bearer token, and replays a request once with a new token when
// the upstream returns 401 and the body can be sent again.
package proxy
