"""The README's first picture: the demo's own model on a demo validation photo it never saw.

    .venv/bin/python docs/demo_picture.py [--summary .raygan/demo_summary.json] [--out docs/demo_restoration.png]

Degrades the whole photo (JPEG q10, the demo's task), restores it whole with the best
checkpoint the summary names, and shows the crop where the model gains most (input | model |
original, each with its PSNR on that crop, upscaled x3 without smoothing so the 8x8 blocks
show), and the whole-photo PSNRs in the caption. Only scikit-image's photos are shown (Set5
and Set14 may not be redistributed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import raygan  # noqa: F401

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def best_crop(jpg, out, target, size):
    """(top, left) of the ``size`` crop, on an 8 px grid, where out gains most over jpg among
    the most detailed quarter of the crops (a flat patch shows little but blocks)."""
    h, w = target.shape[:2]
    boxes = [(top, left) for top in range(0, h - size + 1, 8) for left in range(0, w - size + 1, 8)]
    detail = [float(target[t:t + size, l:l + size].std()) for t, l in boxes]
    floor = float(np.percentile(detail, 75))
    best, where = -1e9, boxes[0]
    for (top, left), d in zip(boxes, detail):
        if d < floor:
            continue
        sl = np.s_[top:top + size, left:left + size]
        gain = psnr(out[sl], target[sl]) - psnr(jpg[sl], target[sl])
        if gain > best:
            best, where = gain, (top, left)
    return where


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--summary", default=str(ROOT / ".raygan" / "demo_summary.json"))
    ap.add_argument("--photo", default="chelsea.png", help="a demo validation photo")
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--zoom", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "demo_restoration.png"))
    args = ap.parse_args(argv)

    from raygan.datasets.degradations import jpeg
    from raygan.datasets.samples import DEMO_VAL, demo_image_paths
    from raygan.platform.restorer import load_generator, restore_array

    if args.photo not in DEMO_VAL:
        ap.error(f"--photo: one of the demo's validation photos ({', '.join(DEMO_VAL)})")
    summary = json.loads(Path(args.summary).read_text())
    model, config = load_generator(summary["best_checkpoint"], summary.get("mlflow_tracking_uri"))
    quality = int(config["data"]["quality"])
    path = next(p for p in demo_image_paths()[1] if Path(p).name == args.photo)
    target = np.asarray(Image.open(path).convert("RGB"))
    jpg = jpeg(target, quality)
    out = np.floor(restore_array(model, jpg) * 255 + 0.5).astype(np.uint8)
    top, left = best_crop(jpg, out, target, args.crop)
    sl = np.s_[top:top + args.crop, left:left + args.crop]
    z, pad, label_h = args.zoom, 8, 22
    side = args.crop * z
    canvas = Image.new("RGB", (3 * side + 4 * pad, side + label_h + 2 * pad + 18), "white")
    draw = ImageDraw.Draw(canvas)
    panels = [(f"JPEG q{quality} input  {psnr(jpg[sl], target[sl]):.2f} dB", jpg),
              (f"raygan demo model  {psnr(out[sl], target[sl]):.2f} dB", out),
              ("original", target)]
    for i, (label, img) in enumerate(panels):
        x = pad + i * (side + pad)
        crop = Image.fromarray(np.ascontiguousarray(img[sl])).resize((side, side), Image.NEAREST)
        canvas.paste(crop, (x, pad + label_h))
        draw.text((x, pad + 4), label, fill="black")
    draw.text((pad, pad + label_h + side + 4),
              f"{args.photo} (scikit-image), {args.crop}x{args.crop} crop at ({top}, {left}), x{z}; whole "
              f"photo: input {psnr(jpg, target):.2f} dB, model {psnr(out, target):.2f} dB (RGB)",
              fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(json.dumps({"out": args.out, "photo": args.photo, "crop": [top, left, args.crop],
                      "crop_psnr_input": psnr(jpg[sl], target[sl]), "crop_psnr_model": psnr(out[sl], target[sl]),
                      "photo_psnr_input": psnr(jpg, target), "photo_psnr_model": psnr(out, target)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
