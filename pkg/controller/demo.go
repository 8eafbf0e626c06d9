package controller

import (
	"net/http"

	"github.com/interviewvm/controlplane/pkg/demo"
)

// demoPage is the demo page's handler when the DEMO setting is on, else
// nil (not mounted).
func demoPage(on bool) http.Handler {
	if !on {
		return nil
	}
	return demo.Handler()
}
