package session

import "time"

// APIKey is a tenant's credential for backends, as listed: the secret
// itself is shown once, at creation, and only its hash is stored.
type APIKey struct {
	ID       string `json:"id"`
	TenantID string `json:"-"`
	Name     string `json:"name"`
	// Role is what the key may do: admin, recruiter or viewer.
	Role string `json:"role"`
	// Prefix is the key's first characters, not secret, so people can tell
	// their keys apart.
	Prefix    string    `json:"prefix"`
	CreatedAt time.Time `json:"created_at"`
	// LastUsedAt is when the key last authenticated a request, to the
	// minute; nil if never.
	LastUsedAt *time.Time `json:"last_used_at"`
}

// IdempotencyRequest asks to run a creating request under an
// Idempotency-Key.
type IdempotencyRequest struct {
	// KeyHash is the hash of the client's Idempotency-Key.
	KeyHash []byte
	// RequestHash is the hash of the request's method, path and body.
	RequestHash []byte
	// Claim identifies this attempt (a UUID).
	Claim string
	// TTL is how long the answer is kept.
	TTL time.Duration
	// Lease is how long an attempt may run before another one with the
	// same request may take the key over (its process died).
	Lease time.Duration
}

// IdempotencyRecord is what the store holds for a key.
type IdempotencyRecord struct {
	// Claimed is true when the asking attempt now holds the key and must
	// run the request; the other fields are then empty.
	Claimed bool
	// RequestHash is the hash of the request that first used the key.
	RequestHash []byte
	// Status is the stored answer's HTTP status; 0 while the first
	// attempt still runs.
	Status      int
	ContentType string
	// Response is the stored answer's body, as the caller stored it.
	Response []byte
}
