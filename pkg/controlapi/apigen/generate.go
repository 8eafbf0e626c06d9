package apigen

// The generated code, apigen.gen.go, comes from api/openapi.yaml, the
// source of truth of the API, with oapi-codegen as pinned in tools/go.mod.
// Regenerate after every change of the spec or of api/oapi-codegen.yaml:
//
//	go generate ./pkg/controlapi/apigen
//
// TestGeneratedCodeIsCurrent fails while the committed code is stale.

//go:generate go tool -modfile=../../../tools/go.mod oapi-codegen -config ../../../api/oapi-codegen.yaml -o apigen.gen.go ../../../api/openapi.yaml
