package apigen

//go:generate go tool -modfile=../../../tools/go.mod oapi-codegen -config ../../../api/oapi-codegen.yaml ../../../api/openapi.yaml
