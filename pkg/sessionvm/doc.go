// Package sessionvm is the program that runs inside the VM of one
// interview (docs/architecture.md, "Components"); cmd/sessionvm is its
// thin command. Run reads its session id, token and the controller's URL
// from the environment, and the rest of its configuration too when the
// machine carries it (else it fetches it from the controller's internal
// API: a pre-warmed machine), serves its HTTP endpoints, reports ready, heartbeats,
// brokers the browser's WebRTC call to the realtime interviewer, collects
// every transcript event server-side, streams the transcript to the
// controller, enforces its own deadline and, when the interview ends,
// hangs up, delivers the rest of the transcript, reports ended with the
// last seq, and returns.
//
// Environment:
//
//	SESSION_ID, SESSION_TOKEN, CONTROLLER_URL  required
//	SESSION_CONFIG  the configuration (session.VMConfig as JSON), else fetched
//	LISTEN_FD       an inherited listening socket (fd number; local provider)
//	LISTEN_ADDR     else listen here
//	SESSION_PORT    else listen on :SESSION_PORT (default 8080)
//	FLY_MACHINE_ID  reported in the ready callback when set
//	OPENAI_API_KEY  the realtime API's server key (realtime=openai only)
//	OPENAI_BASE_URL the realtime API's origin (default https://api.openai.com)
//
// HTTP (the controller proxies /v1/interviews/{id}/session/<x> to
// /session/<x> after authenticating the browser):
//
//	GET  /healthz
//	POST /session/sdp    application/sdp offer → 201 application/sdp answer
//	POST /session/token  → 200 {value, expires_at, model} (openai only)
//	POST /session/call   {"call_id":"rtc_…"} → 204 (openai, token mode)
//
// The realtime mode comes from the config: "simulated" answers the offer
// with the built-in interviewer (pkg/rtcpeer); "openai" creates the call at
// OpenAI's /v1/realtime/calls with the server key and follows its sideband.
//
// It ends the interview when the controller answers a heartbeat with
// "end", when its deadline passes (max_duration), when no call starts
// within the idle timeout (idle_timeout), when the call ends (completed),
// or on SIGTERM/SIGINT (ended_by_user); it exits without reporting when
// the controller says the session is no longer live (409). Logs are JSON
// lines on stderr, each with session_id; neither the session token nor
// the API key is ever logged.
package sessionvm
