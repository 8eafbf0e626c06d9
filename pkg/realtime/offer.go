package realtime

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pion/sdp/v3"
)

// CheckOffer checks that offer is a usable WebRTC SDP offer for a realtime
// call: it parses, starts with v=0, has at least one media section, a data
// channel section (m=application … webrtc-datachannel) for the oai-events
// channel, ICE credentials, a DTLS fingerprint and a DTLS setup role. The
// SDP parser alone accepts an empty string, so every check is explicit.
// The error says what is wrong and is safe to show a client.
func CheckOffer(offer string) error {
	trimmed := strings.TrimLeft(offer, " \t\r\n")
	if trimmed == "" {
		return errors.New("SDP offer is empty")
	}
	if !strings.HasPrefix(trimmed, "v=0") {
		return errors.New("SDP offer does not start with v=0")
	}
	var s sdp.SessionDescription
	if err := s.UnmarshalString(trimmed); err != nil {
		return fmt.Errorf("SDP offer does not parse: %w", err)
	}
	if len(s.MediaDescriptions) == 0 {
		return errors.New("SDP offer has no media section")
	}
	var hasData bool
	for i, md := range s.MediaDescriptions {
		// attr returns a media-level attribute, else the session-level one.
		attr := func(key string) string {
			if v, ok := md.Attribute(key); ok && v != "" {
				return v
			}
			v, _ := s.Attribute(key)
			return v
		}
		if md.MediaName.Media == "application" && slices.Contains(md.MediaName.Formats, "webrtc-datachannel") {
			hasData = true
		}
		for _, key := range []string{"ice-ufrag", "ice-pwd", "fingerprint", "setup"} {
			if attr(key) == "" {
				return fmt.Errorf("SDP offer media section %d (%s) has no a=%s", i, md.MediaName.Media, key)
			}
		}
		switch setup := attr("setup"); setup {
		case "actpass", "active", "passive":
		default:
			return fmt.Errorf("SDP offer media section %d has a=setup:%s, want actpass, active or passive", i, setup)
		}
	}
	if !hasData {
		return errors.New("SDP offer has no data channel section (m=application … webrtc-datachannel): create the oai-events data channel before the offer")
	}
	return nil
}
