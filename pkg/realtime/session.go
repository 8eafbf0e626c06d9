package realtime

// SessionConfig is a GA realtime session configuration
// (RealtimeSessionCreateRequestGA), as sent in the "session" part of a
// call, in a client secret request, or in session.update. Only the fields
// the control plane sets are modelled; the GA shape is nested (audio.input,
// audio.output), never the retired flat beta shape.
type SessionConfig struct {
	// Type is "realtime" (SessionTypeRealtime); required by the API.
	Type             string       `json:"type"`
	Model            string       `json:"model,omitempty"`
	Instructions     string       `json:"instructions,omitempty"`
	OutputModalities []string     `json:"output_modalities,omitempty"`
	Audio            *AudioConfig `json:"audio,omitempty"`
}

// SessionTypeRealtime is the session type of a speech-to-speech session.
const SessionTypeRealtime = "realtime"

// AudioConfig configures a session's input and output audio.
type AudioConfig struct {
	Input  *AudioInput  `json:"input,omitempty"`
	Output *AudioOutput `json:"output,omitempty"`
}

// AudioInput configures what the session does with the caller's audio.
type AudioInput struct {
	Transcription  *Transcription  `json:"transcription,omitempty"`
	TurnDetection  *TurnDetection  `json:"turn_detection,omitempty"`
	NoiseReduction *NoiseReduction `json:"noise_reduction,omitempty"`
}

// AudioOutput configures the model's voice.
type AudioOutput struct {
	Voice string  `json:"voice,omitempty"`
	Speed float64 `json:"speed,omitempty"`
}

// Transcription turns on input audio transcription, which is what yields
// the candidate's side of the transcript (it is off by default).
type Transcription struct {
	Model    string `json:"model"`
	Language string `json:"language,omitempty"`
	Prompt   string `json:"prompt,omitempty"`
}

// TurnDetection configures voice activity detection.
type TurnDetection struct {
	// Type is "server_vad" or "semantic_vad".
	Type              string  `json:"type"`
	Threshold         float64 `json:"threshold,omitempty"`
	PrefixPaddingMS   int     `json:"prefix_padding_ms,omitempty"`
	SilenceDurationMS int     `json:"silence_duration_ms,omitempty"`
	CreateResponse    *bool   `json:"create_response,omitempty"`
	InterruptResponse *bool   `json:"interrupt_response,omitempty"`
}

// NoiseReduction filters the input audio: "near_field" or "far_field".
type NoiseReduction struct {
	Type string `json:"type"`
}

// Defaults of Voice: the session the control plane configures when no
// setting says otherwise (settings REALTIME_MODEL, REALTIME_VOICE and
// TRANSCRIBE_MODEL).
const (
	DefaultModel              = "gpt-realtime"
	DefaultVoice              = "marin"
	DefaultTranscriptionModel = "gpt-4o-transcribe"
)

// Voice selects the models and voice of a session: Model is the realtime
// model (REALTIME_MODEL), Voice the interviewer's voice (REALTIME_VOICE),
// TranscriptionModel the model that transcribes the caller's audio
// (TRANSCRIBE_MODEL). An empty field takes its default.
type Voice struct {
	Model              string
	Voice              string
	TranscriptionModel string
}

// WithDefaults returns v with every empty field set to its default.
func (v Voice) WithDefaults() Voice {
	if v.Model == "" {
		v.Model = DefaultModel
	}
	if v.Voice == "" {
		v.Voice = DefaultVoice
	}
	if v.TranscriptionModel == "" {
		v.TranscriptionModel = DefaultTranscriptionModel
	}
	return v
}
