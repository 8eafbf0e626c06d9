// Package migrations embeds the control plane's SQL migrations (goose
// format) so the controller binary carries its own schema.
package migrations

import "embed"

// FS holds every *.sql migration at its root.
//
//go:embed *.sql
var FS embed.FS
