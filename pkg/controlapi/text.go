package controlapi

import (
	"bytes"
	"unicode/utf8"

	"github.com/interviewvm/controlplane/pkg/session"
)

// checkStorableJSON refuses a JSON body holding text PostgreSQL cannot
// store, before it is decoded (encoding/json would silently turn invalid
// UTF-8 and unpaired surrogate escapes into U+FFFD): invalid UTF-8 bytes,
// the escape \u0000 (NUL), and a \ud800–\udfff escape that is not a
// high-low surrogate pair.
func checkStorableJSON(body []byte) error {
	if !utf8.Valid(body) {
		return session.Errorf(session.EINVALID, "request body is not valid UTF-8")
	}
	for i := 0; i < len(body); i++ {
		if body[i] != '\\' {
			continue
		}
		if i+1 >= len(body) {
			return nil // malformed: the decoder reports it
		}
		if body[i+1] != 'u' {
			i++ // \\, \", \n…: skip the escaped character
			continue
		}
		r, ok := hex4(body, i+2)
		if !ok {
			return nil
		}
		switch {
		case r == 0:
			return session.Errorf(session.EINVALID, "text must not contain NUL characters (\\u0000)")
		case r >= 0xDC00 && r <= 0xDFFF:
			return session.Errorf(session.EINVALID, "text must not contain unpaired surrogates")
		case r >= 0xD800 && r <= 0xDBFF:
			j := i + 6
			if j+1 >= len(body) || body[j] != '\\' || body[j+1] != 'u' {
				return session.Errorf(session.EINVALID, "text must not contain unpaired surrogates")
			}
			low, ok := hex4(body, j+2)
			if !ok || low < 0xDC00 || low > 0xDFFF {
				return session.Errorf(session.EINVALID, "text must not contain unpaired surrogates")
			}
			i = j + 5
			continue
		}
		i += 5
	}
	return nil
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[at : at+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

// storable reports whether s is text PostgreSQL can store: valid UTF-8
// without NUL. Handlers check decoded values with it too, for text that
// does not come from a JSON body (query parameters).
func storable(s string) bool {
	return utf8.ValidString(s) && !bytes.ContainsRune([]byte(s), 0)
}
