package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bangerdev/banger/internal/bytesize"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/fsatomic"
	"github.com/bangerdev/banger/internal/model"
)

// imageStage is a managed image being assembled in <images>/<id>.staging
// (pull, catalog bundle, build): it holds the name reservation, and its
// staging dir is removed unless publish succeeded.
type imageStage struct {
	d         *Daemon
	name, id  string
	final     string // images/<id>
	dir       string // images/<id>.staging
	published bool
}

// stageImage reserves name (a concurrent operation on the same name gets
// already_exists) and creates a fresh staging dir. verb says what the
// other operation is doing, for its error ("being pulled").
func (d *Daemon) stageImage(name, verb string) (*imageStage, error) {
	if !d.images.reserve(name) {
		return nil, errkind.New(errkind.AlreadyExists, "image %q is being %s", name, verb)
	}
	id := newID()
	s := &imageStage{d: d, name: name, id: id, final: filepath.Join(d.layout.ImagesDir(), id)}
	s.dir = s.final + fsatomic.StagingSuffix
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		d.images.unreserve(name)
		return nil, fmt.Errorf("creating %s: %w", s.dir, err)
	}
	return s, nil
}

// checkNewImage checks what a new image is asked to be before any work:
// its name, its --size (parsed; zero when not given) and that no image has
// the name yet (checked again at publish, under the image lock).
func (d *Daemon) checkNewImage(ctx context.Context, name, sizeFlag string) (size int64, err error) {
	if err := model.ValidateImageName("image", name); err != nil {
		return 0, err
	}
	if sizeFlag != "" {
		if size, err = bytesize.Parse(sizeFlag); err != nil {
			return 0, errkind.Wrap(errkind.InvalidArgument, err, "--size")
		}
	}
	if _, err := d.store.GetImage(ctx, name); err == nil {
		return 0, errkind.WithHint(errkind.New(errkind.AlreadyExists, "image %q already exists", name),
			"choose another --name or delete it with `banger image delete "+name+"`")
	}
	return size, nil
}

// rootfs is where the image's root filesystem is written while staged.
func (s *imageStage) rootfs() string { return filepath.Join(s.dir, rootfsName) }

// publish stages the boot artifacts, renames the staging dir into place
// and records the image (seed steps 9–11). A failure after the rename
// removes the final dir.
func (s *imageStage) publish(ctx context.Context, kin kernelInputs, im *model.Image) error {
	im.ID, im.Name, im.Managed = s.id, s.name, true
	if err := stageBootArtifacts(s.dir, s.final, kin, im); err != nil {
		return err
	}
	im.RootfsPath = filepath.Join(s.final, rootfsName)
	s.d.imageMu.Lock()
	defer s.d.imageMu.Unlock()
	if _, err := s.d.store.GetImage(ctx, s.name); err == nil {
		return errkind.New(errkind.AlreadyExists, "image %q already exists", s.name)
	}
	if err := os.Rename(s.dir, s.final); err != nil {
		return fmt.Errorf("publishing image %s: %w", s.name, err)
	}
	s.published = true
	if err := s.d.store.CreateImage(context.WithoutCancel(ctx), im); err != nil {
		os.RemoveAll(s.final)
		return err
	}
	return nil
}

// done releases the name and removes the staging dir of an unpublished image.
func (s *imageStage) done() {
	if !s.published {
		os.RemoveAll(s.dir)
	}
	s.d.images.unreserve(s.name)
}
