package sessionvm

import (
	"testing"
	"time"

	"github.com/interviewvm/controlplane/pkg/realtime"
	"github.com/interviewvm/controlplane/pkg/session"
)

// TestSessionConfigVoice checks that the VM's config chooses the models
// and voice, and that an empty choice keeps the defaults.
func TestSessionConfigVoice(t *testing.T) {
	pos := session.Position{Title: "SRE"}
	got := sessionConfig(pos, time.Minute, realtime.Voice{})
	if got.Model != realtime.DefaultModel || got.Audio.Output.Voice != realtime.DefaultVoice ||
		got.Audio.Input.Transcription.Model != realtime.DefaultTranscriptionModel {
		t.Errorf("defaults: model %q voice %q transcription %q", got.Model, got.Audio.Output.Voice, got.Audio.Input.Transcription.Model)
	}
	got = sessionConfig(pos, time.Minute, realtime.Voice{Model: "gpt-realtime-mini", Voice: "cedar", TranscriptionModel: "gpt-4o-mini-transcribe"})
	if got.Model != "gpt-realtime-mini" || got.Audio.Output.Voice != "cedar" ||
		got.Audio.Input.Transcription.Model != "gpt-4o-mini-transcribe" {
		t.Errorf("chosen: model %q voice %q transcription %q", got.Model, got.Audio.Output.Voice, got.Audio.Input.Transcription.Model)
	}
}
