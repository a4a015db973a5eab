"""Flicker of colorized video with and without temporal smoothing, on the panned test clip (docs/benchmarks.md).

    PYTHONPATH=. python tools/video_flicker.py --checkpoint artifacts/runs/demo/last.pt

Writes the clip of colorfast/flicker.pan_clip (a scikit-image photo panned across the frame, a cut to a
second one), clean and with film grain (fresh noise per frame, as in old footage), and a still camera with
grain (every colour change there is flicker, none is motion), colorizes it with each --smooth value through colorfast/video.py, and measures every
output and the source's own true colours with colorfast/flicker.py: CDC at frame gaps 1, 2, 4 (and their mean)
and mean |delta ab| between consecutive frames, over the frames of each shot. Prints a markdown table, then
the figures as JSON on the last line.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colorfast.loader import load_colorizer               # noqa: E402
from colorfast.flicker import flicker, pan_clip, read_frames  # noqa: E402
from colorfast.video import VideoConfig, colorize_video       # noqa: E402


def redraw_weights(model, scale: float) -> None:
    """Every conv weight drawn anew (He-normal times `scale`, seed 0): a network whose colours jump with small
    changes of the input, to see what smoothing does for a model that flickers (the tests use the same)."""
    import torch
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * scale * (2.0 / p[0].numel()) ** 0.5)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--size", type=int, default=256, help="network input side")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--cut", type=int, default=24, help="first frame of the second shot")
    ap.add_argument("--frame-size", default="256x192", help="WxH of the clip")
    ap.add_argument("--smooth", default="1,5,9", help="comma-separated --smooth values to compare")
    ap.add_argument("--clips", default="3:0,3:8,0:8",
                    help="comma-separated STEP:GRAIN clips: pan in px per frame (0: a still camera) and film "
                         "grain (8-bit std of fresh noise per frame)")
    ap.add_argument("--temperature", type=float, default=0.38)
    ap.add_argument("--redraw-weights", type=float, default=0.0, metavar="SCALE",
                    help="replace the checkpoint's conv weights by random ones at this scale (0: keep them)")
    args = ap.parse_args(argv)
    W, H = map(int, args.frame_size.lower().split("x"))
    colorizer = load_colorizer(args.checkpoint, device="cpu")
    if args.redraw_weights:
        redraw_weights(colorizer.model, args.redraw_weights)
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        for spec in args.clips.split(","):
            step, grain = map(float, spec.split(":"))
            clip = (f"pan {step:g} px/frame" if step else "still") + (f", grain {grain:g}" if grain else "")
            src = pan_clip(Path(d) / "pan.mp4", size=(W, H), frames=args.frames, cut=args.cut, audio=False,
                           step=step, grain=grain)
            rows[f"{clip} | source (true colours)"] = flicker(read_frames(src)[0], cuts=[args.cut])
            for n in map(int, args.smooth.split(",")):
                res = colorize_video(colorizer, src, Path(d) / f"smooth{n}.mp4",
                                     VideoConfig(size=args.size, temperature=args.temperature, smooth=n))
                assert res.cuts == [args.cut], f"cut detection found {res.cuts}, expected [{args.cut}]"
                rows[f"{clip} | --smooth {n}"] = flicker(read_frames(res.path)[0], cuts=[args.cut])
    print(f"clips: {args.frames} frames of {W}x{H}, cut at frame {args.cut}; "
          f"checkpoint {args.checkpoint}" + (f" with conv weights redrawn at scale {args.redraw_weights:g}"
                                              if args.redraw_weights else "")
          + f", network input {args.size}, T = {args.temperature:g}\n")
    print("| clip | video | CDC gap 1 | gap 2 | gap 4 | CDC mean | mean abs delta ab |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        c = r["cdc"]
        print(f"| {name} | {c['gap1']:.5f} | {c['gap2']:.5f} | {c['gap4']:.5f} | {c['mean']:.5f} "
              f"| {r['mean_delta_ab']:.3f} |")
    print(json.dumps(rows))

if __name__ == "__main__":
    main()
