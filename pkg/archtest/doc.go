// Package archtest holds no code: its test enforces the import rules of
// docs/architecture.md ("Packages"), so that the map written down there
// stays the map of the code. The rules read `go list -json` of the whole
// module: which packages each package imports directly, and which it
// links (its transitive dependencies).
package archtest
