"""The papers' headline rows: what each paper reports, and which of our runs reproduces it.

One :class:`PaperRow` per headline number (docs/reproduce.md draws the same rows, with the
commands). ``jobs/evaluate.py`` prints a row's number beside a measured one when the run
matches it (:func:`matching_rows`): the same family (or baseline), task, set, protocol and
the row's ``match`` settings, on whole sets (no ``data.val_crop``, no ``--max-images``).

Every number here is one the paper prints, as quoted where it was available to us (the
``source`` of each row says where); a row whose number was not available when this file was
written has ``metrics`` values of None ("not transcribed") and never prints. Set names are
compared lower-case with everything but letters and digits removed (``Set5`` = ``set5``), so
a folder named after the set matches. Set names marked "ours" in ``note`` are our labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

#: metric key -> how the table names it; ``gain_<metric>`` is the model's value minus the
#: degraded input's (the ``input`` baseline evaluated in the same run, on the same set)
METRIC_NAMES = {"psnr": "PSNR", "ssim": "SSIM", "psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y"}


@dataclass(frozen=True)
class PaperRow:
    paper: str                     # short name of the paper
    table: str                     # where in the paper
    label: str                     # the row as the paper names it
    task: str                      # data task
    protocol: str                  # raygan.platform.evaluation.PROTOCOLS
    config: str                    # our config that trains it (models/configs)
    family: Optional[str] = None   # None: a baseline row (``model`` names it)
    model: Optional[str] = None    # baseline name (input, zp, mig, br, bicubic)
    set: Optional[str] = None      # the test set; None: not named here (never matches)
    #: dotted keys that must hold: ``data.*`` in the evaluation's data config, any other
    #: section in the trained model's run config
    match: Dict[str, Any] = field(default_factory=dict)
    #: metric -> the paper's value (None: not transcribed); ``gain_psnr`` etc. see METRIC_NAMES
    metrics: Dict[str, Optional[float]] = field(default_factory=dict)
    source: str = ""
    note: str = ""

    @property
    def transcribed(self) -> bool:
        return any(v is not None for v in self.metrics.values())


def set_key(name: str) -> str:
    """A set name as rows compare it: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


_WCDGAN = "WCDGAN (Xie, Zhang, Jung, IEEE Access 2021)"
_DAGAN = "DAGAN (Zhang, Hu, Lu, arXiv:2004.03150)"
_DEQ = "DequantizerNet (Geleta, Martin Redondo)"
_FACE = "Prior-guided face SR (Yun Liu, Waseda master's thesis, 2023)"
_PAN = "PAN with a feature pyramid (Li, Wu, Zheng, Yu)"
_ISSUE = "quoted in issue 19 from the paper's text"
_NOT = "not transcribed: the paper's text was not available offline when this row was written"

PAPER_ROWS: List[PaperRow] = [
    # ---- WCDGAN Table 1: Y in, Y out
    *[PaperRow(_WCDGAN, "Table 1 (Y)", f"WCDGAN q{q}", "jpeg", "y", f"wcdgan_y_q{q}.yaml",
               family="wcdgan", set="live1", match={"data.quality": q, "data.channels": 1},
               metrics={"gain_psnr": 1.79 if q == 10 else None},
               source=_ISSUE + " (+1.79 dB PSNR on Y, LIVE1, q10, over the JPEG input)"
               if q == 10 else _NOT,
               note="Table 1's other sets are not named here")
      for q in (5, 10, 20)],
    # ---- WCDGAN Table 2: RGB
    *[PaperRow(_WCDGAN, "Table 2 (RGB)", f"WCDGAN q{q} (RGB)", "jpeg", "rgb", f"wcdgan_rgb_q{q}.yaml",
               family="wcdgan", match={"data.quality": q, "data.channels": 3},
               metrics={"psnr": None, "ssim": None}, source=_NOT,
               note="Table 2's sets are not named here")
      for q in (5, 10)],
    # ---- DAGAN: RGB quantized to k bits, scored on Y, whole images (tiled)
    *[PaperRow(_DAGAN, "de-quantization results", f"DAGAN k={k}", "bitdepth", "rgb-y",
               "dagan.yaml" if k == 4 else "dagan.yaml + data.bits=6", family="dagan",
               set="set5", match={"data.bits": k}, metrics={"psnr_y": None, "ssim_y": None},
               source=_NOT, note="Set5 is one of the paper's four test sets; the other three "
                                 "are not named here")
      for k in (4, 6)],
    PaperRow(_DAGAN, "de-quantization results", "ZP (baseline) k=4", "bitdepth", "rgb-y",
             "-", model="zp", set="set5", match={"data.bits": 4}, metrics={"psnr_y": 31.68},
             source="quoted in issue 6 from the paper's text (4-bit Set5: zero padding 31.68, "
                    "MIG 35.23)"),
    PaperRow(_DAGAN, "de-quantization results", "MIG (baseline) k=4", "bitdepth", "rgb-y",
             "-", model="mig", set="set5", match={"data.bits": 4}, metrics={"psnr_y": 35.23},
             source="quoted in issue 6 from the paper's text (4-bit Set5: zero padding 31.68, "
                    "MIG 35.23)"),
    # ---- DequantizerNet: squares resized to 96x96, PSNR on RGB
    *[PaperRow(_DEQ, "results of the named runs", name, "jpeg", "rgb-sq96",
               f"dequantizer_{name.lower()}.yaml", family="dequantizer", set="dequantizer-test",
               match={"data.quality": q, "model.res_blocks": r}, metrics={"psnr": value},
               source=_ISSUE, note="set name ours: the paper's held-out test images")
      for name, q, r, value in (("Alef", 1, 5, 14.985), ("Gimel", 1, 10, 16.005),
                                ("Beta", 50, 5, 25.578), ("Phi", 50, 10, 27.651))],
    # ---- Face SR x8: methods 1 and 2
    *[PaperRow(_FACE, "results", f"method {i} ({variant})", "face_sr", "rgb",
               f"facesr_{variant}.yaml", family="facesr", match={"model.variant": variant},
               metrics={"psnr": None, "ssim": None}, source=_NOT,
               note="the thesis' test faces are not named here")
      for i, variant in ((1, "cnn"), (2, "gan"))],
    # ---- PAN: SR x4 and the ablation
    *[PaperRow(_PAN, "SR x4 and ablation", label, "sr", "rgb", "pan_sr.yaml" + extra,
               family="pan", match=match, metrics={"psnr": None, "ssim": None}, source=_NOT,
               note="the paper's SR test set is not named here")
      for label, extra, match in (
          ("PAN (full)", "", {"model.conditional": True, "loss.adversarial": 1.0, "loss.adversarial_low": 5.0}),
          ("w/o conditioning", " + model.conditional=false", {"model.conditional": False}),
          ("w/o high-frequency loss", " + loss.adversarial=0", {"loss.adversarial": 0.0}),
          ("w/o low-frequency loss", " + loss.adversarial_low=0", {"loss.adversarial_low": 0.0}))],
]


def _dotted(config: Dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def matching_rows(*, family: Optional[str], model: str, task: str, set_name: str,
                  protocol: str, data: Dict[str, Any], config: Optional[Dict[str, Any]] = None,
                  rows: Sequence[PaperRow] = PAPER_ROWS) -> List[PaperRow]:
    """The transcribed rows that one evaluated (model, set) reproduces.

    ``family`` is the trained model's family (None for a baseline, then ``model`` is its
    name); ``data`` the evaluation's data settings (``to_dict`` of its DataConfig);
    ``config`` the trained model's run config."""
    out = []
    for row in rows:
        if not row.transcribed or row.set is None or set_key(row.set) != set_key(set_name):
            continue
        if row.task != task or row.protocol != protocol:
            continue
        if row.family is not None:
            if family != row.family:
                continue
        elif family is not None or row.model != model:
            continue
        ok = True
        for key, want in row.match.items():
            section, _, rest = key.partition(".")
            have = data.get(rest, _MISSING) if section == "data" else _dotted(config or {}, key)
            if have is _MISSING or not _equal(have, want):
                ok = False
                break
        if ok:
            out.append(row)
    return out


__all__ = ["METRIC_NAMES", "PAPER_ROWS", "PaperRow", "matching_rows", "set_key"]
