package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/interviewvm/controlplane/pkg/webhooks"
)

// `controller webhooks receive` is a development receiver: it listens on
// a local address, registers that address as a webhook endpoint of the
// token's tenant through the public API, prints every event it receives
// once its signature checks out (the Standard Webhooks reference
// verifier, the way a customer's backend would check it), and deletes the
// endpoint again when it stops. `make webhook-receiver` runs it next to
// `make run` (which allows plain-http loopback receivers).

const receiveUsage = `Usage: controller webhooks receive [--listen ADDR] [--api URL] [--token T] [--events a,b]

Registers a local receiver for the token's tenant, prints each verified
event as a line, and removes the endpoint on exit (Ctrl-C).
`

// receiveOptions are the receive command's flags.
type receiveOptions struct {
	listen, api, token, events string
}

// maxReceivedBody caps what the receiver reads of one message.
const maxReceivedBody = 1 << 20

// runReceive is `controller webhooks receive`. ready, when not nil,
// receives the endpoint's id once it is registered.
func runReceive(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready chan<- string) error {
	var o receiveOptions
	fs := flag.NewFlagSet("controller webhooks receive", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8091", "address to receive webhooks on (port 0 picks a free one)")
	fs.StringVar(&o.api, "api", "http://127.0.0.1:8080", "the controller's public base URL")
	fs.StringVar(&o.token, "token", getenv("TOKEN"), "an admin JWT or ik_ API key of the tenant (default: $TOKEN)")
	fs.StringVar(&o.events, "events", "", "comma-separated event types (default: every type)")
	fs.Usage = func() {
		fmt.Fprint(stderr, receiveUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("controller webhooks receive: unexpected argument %q", fs.Arg(0))
	}
	if o.token == "" {
		return errors.New("controller webhooks receive: --token (or $TOKEN) is required: an admin token of the tenant")
	}
	events := make([]string, 0, len(webhooks.EventTypes))
	if o.events == "" {
		for _, t := range webhooks.EventTypes {
			events = append(events, string(t))
		}
	} else {
		events = strings.Split(o.events, ",")
	}

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("webhook receiver: listen on %s: %w", o.listen, err)
	}
	defer ln.Close()
	api := &receiverAPI{base: strings.TrimSuffix(o.api, "/"), token: o.token, client: &http.Client{Timeout: 10 * time.Second}}
	endpoint, err := api.register(ctx, "http://"+ln.Addr().String()+"/", events)
	if err != nil {
		return err
	}
	defer func() {
		// The run's context is over by now: removing the endpoint gets its own.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := api.remove(dctx, endpoint.ID); err != nil {
			fmt.Fprintf(stderr, "webhook receiver: %v (delete it with DELETE /v1/webhooks/%s)\n", err, endpoint.ID)
		} else {
			fmt.Fprintf(stderr, "webhook receiver: endpoint %s removed\n", endpoint.ID)
		}
	}()
	verifier, err := standardwebhooks.NewWebhook(endpoint.Secret)
	if err != nil {
		return fmt.Errorf("webhook receiver: the endpoint's secret: %w", err)
	}
	fmt.Fprintf(stderr, "webhook receiver: endpoint %s → %s (%s)\n", endpoint.ID, endpoint.URL, strings.Join(events, ", "))

	var mu sync.Mutex // one printed line at a time
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			line, status := receiveOne(verifier, r)
			mu.Lock()
			if status == http.StatusNoContent {
				fmt.Fprintln(stdout, line)
			} else {
				fmt.Fprintln(stderr, "webhook receiver: refused:", line)
			}
			mu.Unlock()
			w.WriteHeader(status)
		}),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if ready != nil {
		ready <- endpoint.ID
	}
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("webhook receiver: serve: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("webhook receiver: shut down: %w", err)
	}
	return nil
}

// receiveOne checks one delivery and describes it: 204 and the event's
// line when its signature is valid, 401 (400 for an unreadable body) and
// the reason otherwise.
func receiveOne(verifier *standardwebhooks.Webhook, r *http.Request) (string, int) {
	if r.Method != http.MethodPost {
		return r.Method + " " + r.URL.Path, http.StatusMethodNotAllowed
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReceivedBody))
	if err != nil {
		return "read body: " + err.Error(), http.StatusBadRequest
	}
	id := r.Header.Get(webhooks.HeaderID)
	if err := verifier.Verify(body, r.Header); err != nil {
		return fmt.Sprintf("%s: signature: %v", id, err), http.StatusUnauthorized
	}
	var ev struct {
		Type      string    `json:"type"`
		Timestamp time.Time `json:"timestamp"`
		Data      struct {
			Interview struct {
				ID         string `json:"id"`
				Status     string `json:"status"`
				ExternalID string `json:"external_id"`
			} `json:"interview"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		return fmt.Sprintf("%s: body: %v", id, err), http.StatusBadRequest
	}
	line := fmt.Sprintf("%s %-21s interview=%s status=%s webhook-id=%s verified",
		ev.Timestamp.UTC().Format(time.RFC3339), ev.Type, ev.Data.Interview.ID, ev.Data.Interview.Status, id)
	if ev.Data.Interview.ExternalID != "" {
		line += " external_id=" + ev.Data.Interview.ExternalID
	}
	return line, http.StatusNoContent
}

// receiverAPI is the little of the public API the receiver calls.
type receiverAPI struct {
	base, token string
	client      *http.Client
}

// registeredEndpoint is the answer to POST /v1/webhooks.
type registeredEndpoint struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	Secret string `json:"secret"`
}

func (a *receiverAPI) register(ctx context.Context, url string, events []string) (registeredEndpoint, error) {
	var ep registeredEndpoint
	body, err := json.Marshal(map[string]any{"url": url, "events": events, "description": "controller webhooks receive (development)"})
	if err != nil {
		return ep, fmt.Errorf("register webhook receiver: %w", err)
	}
	resp, err := a.call(ctx, http.MethodPost, "/v1/webhooks", body)
	if err != nil {
		return ep, fmt.Errorf("register webhook receiver: %w", err)
	}
	if resp.status != http.StatusCreated {
		return ep, fmt.Errorf("register webhook receiver: POST /v1/webhooks answered %d: %s", resp.status, resp.body)
	}
	if err := json.Unmarshal(resp.body, &ep); err != nil {
		return ep, fmt.Errorf("register webhook receiver: decode answer %s: %w", resp.body, err)
	}
	if ep.ID == "" || ep.Secret == "" {
		return ep, fmt.Errorf("register webhook receiver: the answer has no id or secret: %s", resp.body)
	}
	return ep, nil
}

func (a *receiverAPI) remove(ctx context.Context, id string) error {
	resp, err := a.call(ctx, http.MethodDelete, "/v1/webhooks/"+id, nil)
	if err != nil {
		return fmt.Errorf("delete webhook endpoint %s: %w", id, err)
	}
	if resp.status != http.StatusNoContent && resp.status != http.StatusNotFound {
		return fmt.Errorf("delete webhook endpoint %s: answered %d: %s", id, resp.status, resp.body)
	}
	return nil
}

type apiAnswer struct {
	status int
	body   []byte
}

func (a *receiverAPI) call(ctx context.Context, method, path string, body []byte) (apiAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, bytes.NewReader(body))
	if err != nil {
		return apiAnswer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return apiAnswer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return apiAnswer{}, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	return apiAnswer{status: resp.StatusCode, body: bytes.TrimSpace(b)}, nil
}
