package builder

import (
	"bytes"
	"slices"
	"testing"
)

// stageRecorder is a log that records the stages it hears.
type stageRecorder struct {
	bytes.Buffer
	stages []Stage
}

func (s *stageRecorder) Stage(st Stage) { s.stages = append(s.stages, st) }

// TestFanoutStages: the stages of a preparation reach every attached
// StageWriter; one that attaches later hears the current stage first;
// plain writers get the output only.
func TestFanoutStages(t *testing.T) {
	f := newFanout()
	early := &stageRecorder{}
	defer f.attach(early)()
	var plain bytes.Buffer
	defer f.attach(&plain)()
	setStage(f, StagePulling)
	f.Write([]byte("pulled\n"))
	setStage(f, StagePreparing)
	late := &stageRecorder{}
	defer f.attach(late)()
	f.Write([]byte("prepared\n"))
	if want := []Stage{StagePulling, StagePreparing}; !slices.Equal(early.stages, want) {
		t.Errorf("early writer heard %v, want %v", early.stages, want)
	}
	if want := []Stage{StagePreparing}; !slices.Equal(late.stages, want) || late.String() != "pulled\nprepared\n" {
		t.Errorf("late writer heard %v and %q", late.stages, late.String())
	}
	if plain.String() != "pulled\nprepared\n" {
		t.Errorf("plain writer got %q", plain.String())
	}
}
