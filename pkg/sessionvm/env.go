package sessionvm

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/interviewvm/controlplane/pkg/realtime"
	"github.com/interviewvm/controlplane/pkg/session"
)

// envMachineID is set by Fly in every machine.
const envMachineID = "FLY_MACHINE_ID"

// The realtime API's settings: the server key (a secret of the session
// app, needed in the openai mode only) and the API's origin.
const (
	envOpenAIKey     = "OPENAI_API_KEY"
	envOpenAIBaseURL = "OPENAI_BASE_URL"
)

// defaultSessionPort is the VM's internal port when SESSION_PORT is unset.
const defaultSessionPort = "8080"

// settings is what sessionvm reads from its environment.
type settings struct {
	sessionID     string
	token         string
	controllerURL string
	machineID     string
	// openAIKey is the realtime API's server key; never logged.
	openAIKey     string
	openAIBaseURL string
	// listenFD is the inherited listening socket, or -1.
	listenFD   int
	listenAddr string
	// config is the VM's configuration given with the machine
	// (SESSION_CONFIG), or nil: then the VM fetches it.
	config *session.VMConfig
}

// readSettings reads and checks the environment.
func readSettings(getenv func(string) string) (settings, error) {
	s := settings{
		sessionID:     getenv(session.EnvSessionID),
		token:         getenv(session.EnvSessionToken),
		controllerURL: getenv(session.EnvControllerURL),
		machineID:     getenv(envMachineID),
		openAIKey:     getenv(envOpenAIKey),
		openAIBaseURL: getenv(envOpenAIBaseURL),
		listenFD:      -1,
	}
	if s.openAIBaseURL == "" {
		s.openAIBaseURL = realtime.DefaultBaseURL
	}
	var missing []error
	for _, kv := range [][2]string{
		{session.EnvSessionID, s.sessionID},
		{session.EnvSessionToken, s.token},
		{session.EnvControllerURL, s.controllerURL},
	} {
		if kv[1] == "" {
			missing = append(missing, fmt.Errorf("%s is not set", kv[0]))
		}
	}
	if err := errors.Join(missing...); err != nil {
		return settings{}, err
	}
	if raw := getenv(session.EnvSessionConfig); raw != "" {
		var cfg session.VMConfig
		if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
			return settings{}, fmt.Errorf("%s: %w", session.EnvSessionConfig, err)
		}
		if cfg.SessionID != s.sessionID {
			return settings{}, fmt.Errorf("%s is the configuration of session %q, not of %s", session.EnvSessionConfig, cfg.SessionID, s.sessionID)
		}
		s.config = &cfg
	}
	switch {
	case getenv(session.EnvListenFD) != "":
		v := getenv(session.EnvListenFD)
		fd, err := strconv.Atoi(v)
		if err != nil || fd < 3 {
			return settings{}, fmt.Errorf("%s=%q: want a file descriptor number ≥ 3", session.EnvListenFD, v)
		}
		s.listenFD = fd
	case getenv(session.EnvListenAddr) != "":
		s.listenAddr = getenv(session.EnvListenAddr)
	default:
		port := getenv(session.EnvSessionPort)
		if port == "" {
			port = defaultSessionPort
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return settings{}, fmt.Errorf("%s=%q: want a port number", session.EnvSessionPort, port)
		}
		s.listenAddr = ":" + port
	}
	return s, nil
}

// listen returns the VM's listener: the inherited socket, or a new one.
func (s settings) listen() (net.Listener, error) {
	if s.listenFD < 0 {
		ln, err := net.Listen("tcp", s.listenAddr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", s.listenAddr, err)
		}
		return ln, nil
	}
	f := os.NewFile(uintptr(s.listenFD), "listener")
	// FileListener dups the descriptor; close the original either way.
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("inherited listener on fd %d: %w", s.listenFD, err)
	}
	return ln, nil
}
