package controller

import (
	"net/http"

	"github.com/interviewvm/controlplane/pkg/demo"
)

// demoPage is the demo page's handler when the DEMO setting is on, else
// nil (not mounted). The page offers the configured regions and knows the
// pre-warm lead.
func demoPage(cfg Config) http.Handler {
	if !cfg.Demo {
		return nil
	}
	return demo.Handler(demo.Config{Regions: cfg.regions(), PrewarmLead: cfg.PrewarmLead})
}
