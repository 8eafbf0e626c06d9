package controlapi

import (
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/interviewvm/controlplane/pkg/controlapi/apigen"
)

// This file binds the contract (api/openapi.yaml, generated into apigen)
// to the handlers: the routes, their authentication by security scheme,
// and request validation against the spec. The path id is validated by the
// generated wrapper and the validator; handlers read it with pathID.

var _ apigen.ServerInterface = (*Server)(nil)

// registerRoutes mounts every operation of the contract on e.
func (s *Server) registerRoutes(e *echo.Echo) {
	validate := apigen.Validator(apigen.ValidatorOptions{})
	limit := s.rateLimit()
	mw := map[string][]echo.MiddlewareFunc{}
	for op, schemes := range apigen.Security() {
		var chain []echo.MiddlewareFunc
		switch {
		case has(schemes, apigen.SchemeInterviewAccessQuery):
			chain = append(chain, s.requireStream, limit)
		case has(schemes, apigen.SchemeInterviewAccessToken):
			chain = append(chain, s.requireSession, limit)
		case has(schemes, apigen.SchemeTenantJWT), has(schemes, apigen.SchemeTenantAPIKey):
			chain = append(chain, s.requireTenant(has(schemes, apigen.SchemeTenantAPIKey)), limit)
		}
		if adminOps[op] {
			chain = append(chain, requireAdmin)
		}
		// sessionToken routes check the VM's token in the handler, against
		// the session's stored hash.
		if op == "postSessionSDP" {
			chain = append(chain, middleware.BodyLimit(maxSDP))
		}
		if op == "ingestTranscript" || op == "reportVMHeartbeat" {
			// The hot paths of every VM: their handlers check every field
			// the spec describes (provision.validSegment, validHeartbeat),
			// and the spec validator's second decode into generic maps cost
			// more than half the handler's CPU (docs/benchmarks.md, cases 3
			// and 5: 10,000 VMs send 5,000 heartbeats a second).
			mw[op] = chain
			continue
		}
		mw[op] = append(chain, validate)
		if idempotentOps[op] {
			// After validation: a request that breaks the contract stores
			// nothing.
			mw[op] = append(mw[op], s.idempotent)
		}
	}
	apigen.RegisterHandlersWithOptions(e, s, apigen.RegisterHandlersOptions{OperationMiddlewares: mw})
}

// idempotentOps are the creating operations whose answers are kept under
// the client's Idempotency-Key (see idempotency.go); a new creating route
// opts in with one line here.
var idempotentOps = map[string]bool{
	"createPosition":  true,
	"createCandidate": true,
	"createInterview": true,
	"createAPIKey":    true,

	"createWebhookEndpoint": true,
}

// adminOps are the operations only the admin role may call.
var adminOps = map[string]bool{
	"createAPIKey": true, "listAPIKeys": true, "deleteAPIKey": true,

	"createWebhookEndpoint": true, "listWebhookEndpoints": true, "deleteWebhookEndpoint": true,
	"listWebhookDeliveries": true, "retryWebhookDelivery": true,
}

func has(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// GetOpenAPISpec handles "GET /openapi.yaml": the contract itself.
func (s *Server) GetOpenAPISpec(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/yaml", apigen.Spec())
}

// GetHealthz handles "GET /healthz".
func (s *Server) GetHealthz(c echo.Context) error { return s.handleHealthz(c) }

// GetReadyz handles "GET /readyz".
func (s *Server) GetReadyz(c echo.Context) error { return s.handleReadyz(c) }

// ListPositions handles "GET /v1/positions".
func (s *Server) ListPositions(c echo.Context, _ apigen.ListPositionsParams) error {
	return s.handlePositionList(c)
}

// CreatePosition handles "POST /v1/positions".
func (s *Server) CreatePosition(c echo.Context, _ apigen.CreatePositionParams) error {
	return s.handlePositionCreate(c)
}

// GetPosition handles "GET /v1/positions/{id}".
func (s *Server) GetPosition(c echo.Context, _ apigen.ID) error { return s.handlePositionGet(c) }

// ListCandidates handles "GET /v1/candidates".
func (s *Server) ListCandidates(c echo.Context, _ apigen.ListCandidatesParams) error {
	return s.handleCandidateList(c)
}

// CreateCandidate handles "POST /v1/candidates".
func (s *Server) CreateCandidate(c echo.Context, _ apigen.CreateCandidateParams) error {
	return s.handleCandidateCreate(c)
}

// UpdatePosition handles "PATCH /v1/positions/{id}".
func (s *Server) UpdatePosition(c echo.Context, _ apigen.ID) error { return s.handlePositionPatch(c) }

// DeletePosition handles "DELETE /v1/positions/{id}".
func (s *Server) DeletePosition(c echo.Context, _ apigen.ID) error { return s.handlePositionDelete(c) }

// UpdateCandidate handles "PATCH /v1/candidates/{id}".
func (s *Server) UpdateCandidate(c echo.Context, _ apigen.ID) error { return s.handleCandidatePatch(c) }

// DeleteCandidate handles "DELETE /v1/candidates/{id}".
func (s *Server) DeleteCandidate(c echo.Context, _ apigen.ID) error {
	return s.handleCandidateDelete(c)
}

// UpdateInterview handles "PATCH /v1/interviews/{id}".
func (s *Server) UpdateInterview(c echo.Context, _ apigen.ID) error { return s.handleInterviewPatch(c) }

// DeleteInterview handles "DELETE /v1/interviews/{id}".
func (s *Server) DeleteInterview(c echo.Context, _ apigen.ID) error {
	return s.handleInterviewDelete(c)
}

// GetCandidate handles "GET /v1/candidates/{id}".
func (s *Server) GetCandidate(c echo.Context, _ apigen.ID) error { return s.handleCandidateGet(c) }

// ListInterviews handles "GET /v1/interviews".
func (s *Server) ListInterviews(c echo.Context, _ apigen.ListInterviewsParams) error {
	return s.handleInterviewList(c)
}

// CreateInterview handles "POST /v1/interviews".
func (s *Server) CreateInterview(c echo.Context, _ apigen.CreateInterviewParams) error {
	return s.handleInterviewCreate(c)
}

// GetInterview handles "GET /v1/interviews/{id}".
func (s *Server) GetInterview(c echo.Context, _ apigen.ID) error { return s.handleInterviewGet(c) }

// StartInterview handles "POST /v1/interviews/{id}/start".
func (s *Server) StartInterview(c echo.Context, _ apigen.ID, _ apigen.StartInterviewParams) error {
	return s.handleInterviewStart(c)
}

// EndInterview handles "POST /v1/interviews/{id}/end".
func (s *Server) EndInterview(c echo.Context, _ apigen.ID) error { return s.handleInterviewEnd(c) }

// CancelInterview handles "POST /v1/interviews/{id}/cancel".
func (s *Server) CancelInterview(c echo.Context, _ apigen.ID) error {
	return s.handleInterviewCancel(c)
}

// ListInterviewEvents handles "GET /v1/interviews/{id}/events".
func (s *Server) ListInterviewEvents(c echo.Context, _ apigen.ID) error {
	return s.handleInterviewEvents(c)
}

// GetTranscript handles "GET /v1/interviews/{id}/transcript".
func (s *Server) GetTranscript(c echo.Context, _ apigen.ID, _ apigen.GetTranscriptParams) error {
	return s.handleTranscriptGet(c)
}

// StreamTranscript handles "GET /v1/interviews/{id}/transcript/stream".
func (s *Server) StreamTranscript(c echo.Context, _ apigen.ID, _ apigen.StreamTranscriptParams) error {
	return s.handleTranscriptStream(c)
}

// PostSessionSDP handles "POST /v1/interviews/{id}/session/sdp".
func (s *Server) PostSessionSDP(c echo.Context, _ apigen.ID) error { return s.handleSessionProxy(c) }

// CreateSessionToken handles "POST /v1/interviews/{id}/session/token".
func (s *Server) CreateSessionToken(c echo.Context, _ apigen.ID) error {
	return s.handleSessionProxy(c)
}

// ReportSessionCall handles "POST /v1/interviews/{id}/session/call".
func (s *Server) ReportSessionCall(c echo.Context, _ apigen.ID) error {
	return s.handleSessionProxy(c)
}

// ListAPIKeys handles "GET /v1/api-keys".
func (s *Server) ListAPIKeys(c echo.Context, _ apigen.ListAPIKeysParams) error {
	return s.handleAPIKeyList(c)
}

// CreateAPIKey handles "POST /v1/api-keys".
func (s *Server) CreateAPIKey(c echo.Context, _ apigen.CreateAPIKeyParams) error {
	return s.handleAPIKeyCreate(c)
}

// DeleteAPIKey handles "DELETE /v1/api-keys/{id}".
func (s *Server) DeleteAPIKey(c echo.Context, _ apigen.ID) error { return s.handleAPIKeyDelete(c) }

// GetVMConfig handles "GET /internal/v1/sessions/{id}/config".
func (s *Server) GetVMConfig(c echo.Context, _ apigen.SessionID) error { return s.handleVMConfig(c) }

// ReportVMReady handles "POST /internal/v1/sessions/{id}/ready".
func (s *Server) ReportVMReady(c echo.Context, _ apigen.SessionID) error { return s.handleVMReady(c) }

// ReportVMHeartbeat handles "POST /internal/v1/sessions/{id}/heartbeat".
func (s *Server) ReportVMHeartbeat(c echo.Context, _ apigen.SessionID) error {
	return s.handleVMHeartbeat(c)
}

// IngestTranscript handles "POST /internal/v1/sessions/{id}/transcript".
func (s *Server) IngestTranscript(c echo.Context, _ apigen.SessionID) error {
	return s.handleVMTranscript(c)
}

// ReportVMEnded handles "POST /internal/v1/sessions/{id}/ended".
func (s *Server) ReportVMEnded(c echo.Context, _ apigen.SessionID) error { return s.handleVMEnded(c) }
