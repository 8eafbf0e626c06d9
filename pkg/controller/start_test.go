package controller

import (
	"strings"
	"testing"

	"github.com/google/uuid"
)

// TestStartWaitWokenByAnotherReplica starts an interview on replica A whose
// VMs report to replica B (A's INTERNAL_URL is B's): the ready report is
// recorded by B, and A's waiting start request must learn it from
// PostgreSQL's change notification. A waits on nothing else (no poll of
// the row), so without the notification the request would answer
// "provisioning" when its wait ran out.
func TestStartWaitWokenByAnotherReplica(t *testing.T) {
	b := startController(t, nil)
	a := startController(t, map[string]string{"DATABASE_URL": b.dbURL, "INTERNAL_URL": b.base})
	tok := token(t, uuid.NewString(), "recruiter")
	id := a.seed(t, tok)

	ans := a.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/start?wait=60", tok, nil)
	iv := ans["interview"].(map[string]any)
	if iv["status"] != "ready" {
		t.Fatalf("start on replica A answered status %v, want ready", iv["status"])
	}
	const readyRoute = `"route":"/internal/v1/sessions/:id/ready"`
	if !strings.Contains(b.logs.String(), readyRoute) {
		t.Fatalf("replica B never received the ready report")
	}
	if strings.Contains(a.logs.String(), readyRoute) {
		t.Fatalf("replica A received the ready report itself: the test proves nothing")
	}
	a.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/cancel", tok, nil)
}
