package controller

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/interviewvm/controlplane/pkg/controlapi"
)

// metricPrefix namespaces every metric family of the controller but the
// Go runtime's and the process's (go_*, process_*).
const metricPrefix = "interview_"

// listeners are the controller's HTTP listeners: the API's (LISTEN_ADDR),
// and the optional metrics (METRICS_ADDR) and internal (INTERNAL_ADDR)
// ones; nil when not configured.
type listeners struct {
	public, metrics, internal net.Listener
}

// listen opens every configured listener.
func listen(cfg Config) (*listeners, error) {
	l := &listeners{}
	for _, x := range []struct {
		env, addr string
		ln        *net.Listener
	}{
		{"LISTEN_ADDR", cfg.ListenAddr, &l.public},
		{"METRICS_ADDR", cfg.MetricsAddr, &l.metrics},
		{"INTERNAL_ADDR", cfg.InternalAddr, &l.internal},
	} {
		if x.addr == "" && x.ln != &l.public {
			continue
		}
		ln, err := net.Listen("tcp", x.addr)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("listen on %s (%s): %w", x.addr, x.env, err)
		}
		*x.ln = ln
	}
	return l, nil
}

// close closes the listeners no server has closed yet.
func (l *listeners) close() {
	for _, ln := range []net.Listener{l.public, l.metrics, l.internal} {
		if ln != nil {
			_ = ln.Close() // already closed by the server's Shutdown, or never served
		}
	}
}

// internalURL is the default INTERNAL_URL: the internal listener's
// address when there is one, else the API's, at 127.0.0.1 when the
// listener binds every interface.
func (l *listeners) internalURL() string {
	ln := l.public
	if l.internal != nil {
		ln = l.internal
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// logAttrs are the listeners' addresses as log attributes, then extra.
func (l *listeners) logAttrs(extra ...any) []any {
	attrs := []any{"addr", l.public.Addr().String()}
	if l.metrics != nil {
		attrs = append(attrs, "metrics_addr", l.metrics.Addr().String())
	}
	if l.internal != nil {
		attrs = append(attrs, "internal_addr", l.internal.Addr().String())
	}
	return append(attrs, extra...)
}

// server is one listener's HTTP server.
type server struct {
	*http.Server
	name string
	ln   net.Listener
}

func (s server) serve() error { return s.Serve(s.ln) }

// servers builds one HTTP server per listener, each with the API's
// handler for its listener.
func (l *listeners) servers(api *controlapi.Server, errorLog *log.Logger) []server {
	mk := func(name string, ln net.Listener, h http.Handler) server {
		return server{Server: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errorLog}, name: name, ln: ln}
	}
	out := []server{mk("api", l.public, api.Handler())}
	if l.metrics != nil {
		out = append(out, mk("metrics", l.metrics, api.MetricsHandler()))
	}
	if l.internal != nil {
		out = append(out, mk("internal", l.internal, api.InternalHandler()))
	}
	return out
}
