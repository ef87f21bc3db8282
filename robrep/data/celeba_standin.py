"""A full-size CelebA stand-in: CelebA's exact layout and sizes, with drawn faces whose attributes are visible.

The real CelebA cannot be downloaded here (and often not anywhere without a hand-made download), but its
layout and size can be reproduced, which is what a reader, a cache, training and the 17-task bench are
measured on (``benchmarks/celeba_scale.py``). ``write_standin(root, n)`` writes::

    root/img_align_celeba/000001.jpg ... (n JPEGs, 178 x 218, quality 90)
    root/list_attr_celeba.txt          n, the 40 names, then "000001.jpg -1  1 ..." rows
    root/list_eval_partition.txt       contiguous partitions in the real proportions
                                       (n = 202,599 gives exactly 162,770 / 19,867 / 19,962)

Each image is a face drawn from its attributes, sampled at roughly CelebA's frequencies: hair colour (black,
blond, brown, grey) or bald, bangs, a hat, glasses, a beard, goatee or moustache, a smile or an open mouth,
lipstick and make-up, pale skin, a wider jaw for Male, forehead lines for not Young, blur; position, size,
background and lighting vary and every image gets noise, so a probe has something to learn and something to
ignore. The attributes that are not drawn (Attractive, Oval_Face, ...) are random labels at their real
frequency: a probe can do no better than the majority class on those. Deterministic given ``seed`` whatever
the number of worker processes.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from robrep.data.celeba import ATTR_FILE, ATTRIBUTES, IMAGES, PARTITION_FILE, decode_workers

log = logging.getLogger(__name__)

FULL = 202_599
PARTITION_SIZES = (162_770, 19_867, 19_962)  # train, valid, test of the real CelebA
W, H = 178, 218
# Approximate frequencies of each attribute in CelebA (share of images with the attribute).
FREQUENCY = {
    "5_o_Clock_Shadow": 0.11, "Arched_Eyebrows": 0.27, "Attractive": 0.51, "Bags_Under_Eyes": 0.20,
    "Bald": 0.02, "Bangs": 0.15, "Big_Lips": 0.24, "Big_Nose": 0.23, "Black_Hair": 0.24, "Blond_Hair": 0.15,
    "Blurry": 0.05, "Brown_Hair": 0.21, "Bushy_Eyebrows": 0.14, "Chubby": 0.06, "Double_Chin": 0.05,
    "Eyeglasses": 0.065, "Goatee": 0.06, "Gray_Hair": 0.04, "Heavy_Makeup": 0.39, "High_Cheekbones": 0.45,
    "Male": 0.42, "Mouth_Slightly_Open": 0.48, "Mustache": 0.04, "Narrow_Eyes": 0.12, "No_Beard": 0.83,
    "Oval_Face": 0.28, "Pale_Skin": 0.04, "Pointy_Nose": 0.28, "Receding_Hairline": 0.08, "Rosy_Cheeks": 0.07,
    "Sideburns": 0.06, "Smiling": 0.48, "Straight_Hair": 0.21, "Wavy_Hair": 0.32, "Wearing_Earrings": 0.19,
    "Wearing_Hat": 0.05, "Wearing_Lipstick": 0.47, "Wearing_Necklace": 0.12, "Wearing_Necktie": 0.07,
    "Young": 0.77,
}
DRAWN = ("Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Eyeglasses", "Goatee",
         "Mustache", "No_Beard", "5_o_Clock_Shadow", "Smiling", "Mouth_Slightly_Open", "Wearing_Lipstick",
         "Heavy_Makeup", "Pale_Skin", "Male", "Young", "Wearing_Hat", "Blurry", "Rosy_Cheeks", "Bushy_Eyebrows",
         "Narrow_Eyes", "Big_Nose", "Wearing_Necktie", "Wearing_Earrings", "Chubby")
HAIR = {"Black_Hair": (25, 20, 18), "Blond_Hair": (225, 195, 120), "Brown_Hair": (110, 70, 40),
        "Gray_Hair": (170, 170, 170)}


def partition_sizes(n: int) -> tuple[int, int, int]:
    """(train, valid, test) for ``n`` images in CelebA's proportions; exact for the full 202,599."""
    if n < 3:
        raise ValueError(f"a CelebA stand-in needs at least 3 images (one per partition), got {n}")
    train = max(1, round(n * PARTITION_SIZES[0] / FULL))
    valid = max(1, round(n * PARTITION_SIZES[1] / FULL))
    train = min(train, n - valid - 1)
    return train, valid, n - train - valid


def sample_attributes(n: int, seed: int = 0) -> np.ndarray:
    """(n, 40) bool, columns in ``ATTRIBUTES`` order, with CelebA's rough frequencies and its exclusions
    (one hair colour at most, none when bald; beards and make-up mostly by sex)."""
    rng = np.random.default_rng(seed)
    a = {name: rng.random(n) < p for name, p in FREQUENCY.items()}
    male = a["Male"]
    # hair: one colour (or none of the four) and bald excludes hair colour and bangs
    colour = rng.choice(5, size=n, p=[0.24, 0.15, 0.21, 0.04, 0.36])  # black, blond, brown, grey, other
    for i, name in enumerate(("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")):
        a[name] = colour == i
    a["Bald"] = male & (rng.random(n) < 0.05)
    for name in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Bangs"):
        a[name] &= ~a["Bald"]
    beard = male & (rng.random(n) < 0.40)
    a["No_Beard"] = ~beard
    a["Goatee"] = beard & (rng.random(n) < 0.35)
    a["Mustache"] = beard & (rng.random(n) < 0.25)
    a["5_o_Clock_Shadow"] = male & ~beard & (rng.random(n) < 0.25)
    a["Heavy_Makeup"] = ~male & (rng.random(n) < 0.66)
    a["Wearing_Lipstick"] = ~male & (rng.random(n) < 0.80)
    a["Wearing_Necktie"] = male & (rng.random(n) < 0.16)
    a["Wearing_Earrings"] = ~male & (rng.random(n) < 0.32)
    a["Mouth_Slightly_Open"] = np.where(a["Smiling"], rng.random(n) < 0.65, rng.random(n) < 0.30)
    return np.stack([a[name] for name in ATTRIBUTES], axis=1)


def draw_face(attrs: dict[str, bool], rng: np.random.Generator, noise: np.ndarray) -> Image.Image:
    """One 178 x 218 RGB face drawn from ``attrs`` (attribute name -> present)."""
    bg = tuple(int(v) for v in rng.integers(40, 230, 3))
    img = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(img)
    cx, cy = 89 + rng.integers(-6, 7), 122 + rng.integers(-6, 7)
    fw = (44 if attrs["Male"] else 39) + rng.integers(-3, 4) + (6 if attrs["Chubby"] else 0)
    fh = 56 + rng.integers(-3, 4)
    skin = np.array((235, 215, 200) if attrs["Pale_Skin"] else rng.choice([(225, 180, 150), (200, 150, 115),
                                                                            (150, 105, 75), (235, 195, 165)]))
    skin = tuple(int(v) for v in np.clip(skin + rng.integers(-12, 13, 3), 0, 255))
    hair = HAIR.get(next((h for h in HAIR if attrs[h]), ""), (60 + rng.integers(0, 30), 45, 35))
    hair = tuple(int(v) for v in hair)
    top = cy - fh
    if not attrs["Bald"]:  # hair behind the head; longer without Male
        long = 0 if attrs["Male"] else 55
        d.ellipse((cx - fw - 10, top - 14, cx + fw + 10, cy + long // 2), fill=hair)
        if long:
            d.rectangle((cx - fw - 10, cy - 10, cx + fw + 10, cy + long), fill=hair)
    if attrs["Wearing_Necktie"]:
        d.polygon([(cx - 6, cy + fh + 8), (cx + 6, cy + fh + 8), (cx + 9, H), (cx - 9, H)], fill=(150, 20, 40))
    d.rectangle((cx - 16, cy + fh - 8, cx + 16, cy + fh + 12), fill=skin)  # neck
    d.ellipse((cx - fw, top, cx + fw, cy + fh), fill=skin)
    if not attrs["Bald"]:
        if attrs["Bangs"]:
            d.chord((cx - fw, top - 4, cx + fw, cy - 4), 180, 360, fill=hair)
        else:
            d.chord((cx - fw, top - 6, cx + fw, top + 30), 180, 360, fill=hair)
    if attrs["Wearing_Hat"]:
        hat = tuple(int(v) for v in rng.integers(0, 256, 3))
        d.rectangle((cx - fw - 14, top - 4, cx + fw + 14, top + 10), fill=hat)
        d.rectangle((cx - fw + 4, top - 34, cx + fw - 4, top + 4), fill=hat)
    if not attrs["Young"]:
        for k in range(3):
            y = top + 26 + 5 * k
            d.line((cx - 18, y, cx + 18, y), fill=tuple(max(0, c - 45) for c in skin), width=1)
    eye_y = cy - 12
    _eyes(d, attrs, cx, cy, eye_y, fw, hair)
    nose = 7 if attrs["Big_Nose"] else 4
    d.polygon([(cx, eye_y + 4), (cx - nose, cy + 12), (cx + nose, cy + 12)], fill=tuple(max(0, c - 30) for c in skin))
    _mouth(d, attrs, cx, cy, fw, fh, skin, hair)
    if attrs["Blurry"]:
        img = img.filter(ImageFilter.GaussianBlur(2.5))
    light = rng.uniform(0.75, 1.2)
    oy, ox = rng.integers(0, noise.shape[0] - H), rng.integers(0, noise.shape[1] - W)
    arr = np.asarray(img, dtype=np.int16) * light + noise[oy:oy + H, ox:ox + W]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _eyes(d: ImageDraw.ImageDraw, attrs: dict[str, bool], cx, cy, eye_y, fw, hair) -> None:
    """Eyes, brows, glasses, cheeks and earrings (no random draw: the face's draws stay in their order)."""
    eye_dx = 17
    eye_h = 2 if attrs["Narrow_Eyes"] else 4
    brow = 4 if attrs["Bushy_Eyebrows"] else 2
    for sx in (-1, 1):
        ex = cx + sx * eye_dx
        if attrs["Heavy_Makeup"]:
            d.ellipse((ex - 10, eye_y - 8, ex + 10, eye_y + 4), fill=(120, 80, 140))
        d.ellipse((ex - 7, eye_y - eye_h, ex + 7, eye_y + eye_h), fill=(245, 245, 245))
        d.ellipse((ex - 3, eye_y - 3, ex + 3, eye_y + 3), fill=(40, 30, 25))
        d.line((ex - 9, eye_y - 9, ex + 9, eye_y - 9), fill=hair if not attrs["Bald"] else (60, 45, 35), width=brow)
        if attrs["Eyeglasses"]:
            d.rectangle((ex - 12, eye_y - 9, ex + 12, eye_y + 8), outline=(15, 15, 15), width=3)
        if attrs["Rosy_Cheeks"]:
            d.ellipse((ex - 6, eye_y + 16, ex + 6, eye_y + 26), fill=(235, 120, 120))
        if attrs["Wearing_Earrings"]:
            d.ellipse((cx + sx * fw - 3, cy + 2, cx + sx * fw + 3, cy + 10), fill=(240, 210, 60))
    if attrs["Eyeglasses"]:
        d.line((cx - 5, eye_y - 2, cx + 5, eye_y - 2), fill=(15, 15, 15), width=3)


def _mouth(d: ImageDraw.ImageDraw, attrs: dict[str, bool], cx, cy, fw, fh, skin, hair) -> None:
    """Beard, goatee, moustache, lips and mouth (no random draw)."""
    mouth_y = cy + 28
    if attrs["5_o_Clock_Shadow"] or not attrs["No_Beard"]:
        shade = (90, 75, 65) if attrs["5_o_Clock_Shadow"] else tuple(max(0, c - 20) for c in hair)
        if not attrs["No_Beard"] and not attrs["Goatee"] and not attrs["Mustache"]:
            d.chord((cx - fw + 2, cy - 10, cx + fw - 2, cy + fh + 2), 20, 160, fill=shade)  # full beard
        elif attrs["5_o_Clock_Shadow"]:
            d.chord((cx - fw + 6, cy, cx + fw - 6, cy + fh), 20, 160, fill=shade)
    if attrs["Goatee"]:
        d.ellipse((cx - 10, mouth_y + 6, cx + 10, cy + fh + 4), fill=tuple(max(0, c - 20) for c in hair))
    if attrs["Mustache"]:
        d.rectangle((cx - 14, mouth_y - 9, cx + 14, mouth_y - 4), fill=tuple(max(0, c - 20) for c in hair))
    lips = (200, 30, 50) if attrs["Wearing_Lipstick"] else tuple(max(0, c - 50) for c in skin)
    if attrs["Mouth_Slightly_Open"]:
        d.ellipse((cx - 12, mouth_y - 4, cx + 12, mouth_y + 8), fill=lips)
        d.ellipse((cx - 8, mouth_y - 1, cx + 8, mouth_y + 5), fill=(50, 20, 20))
    if attrs["Smiling"]:
        d.arc((cx - 16, mouth_y - 14, cx + 16, mouth_y + 8), 20, 160, fill=lips, width=4)
    elif not attrs["Mouth_Slightly_Open"]:
        d.line((cx - 12, mouth_y, cx + 12, mouth_y), fill=lips, width=4)


def _write_range(root: str, attrs: np.ndarray, start: int, seed: int) -> int:
    """Draw and save images ``start .. start + len(attrs) - 1`` (0-based)."""
    folder = Path(root) / IMAGES
    noise = np.random.default_rng([seed, 1, start]).normal(0, 6, (H + 64, W + 64, 3)).astype(np.int16)
    for i, row in enumerate(attrs):
        k = start + i
        rng = np.random.default_rng([seed, 2, k])
        img = draw_face(dict(zip(ATTRIBUTES, row.tolist())), rng, noise)
        img.save(folder / f"{k + 1:06d}.jpg", quality=90)
    return len(attrs)


def write_standin(root: str | os.PathLike, n: int = FULL, seed: int = 0, workers: int | None = None,
                  progress=None) -> Path:
    """Write a CelebA stand-in of ``n`` images to ``root`` (see the module's docstring); returns ``root``.

    ``workers`` processes draw the images (default ``decode_workers()``); ``progress(done, n)`` is called
    as chunks finish. The two lists are written last, so a folder whose writing was interrupted is not a
    complete CelebA folder and the reader says so.
    """
    root = Path(root)
    if n < 3:
        raise ValueError(f"a CelebA stand-in needs at least 3 images, got {n}")
    if n > 999_999:
        raise ValueError(f"CelebA's file names have 6 digits: at most 999,999 images, got {n}")
    (root / IMAGES).mkdir(parents=True, exist_ok=True)
    for name in (ATTR_FILE, PARTITION_FILE):
        (root / name).unlink(missing_ok=True)
    attrs = sample_attributes(n, seed)
    workers = max(1, min(decode_workers() if workers is None else workers, n // 1000 or 1))
    chunk, done = 2000, 0
    ranges = [(i, attrs[i:i + chunk]) for i in range(0, n, chunk)]
    if workers == 1:
        for i, a in ranges:
            done += _write_range(str(root), a, i, seed)
            if progress:
                progress(done, n)
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            for got in [pool.submit(_write_range, str(root), a, i, seed) for i, a in ranges]:
                done += got.result()
                if progress:
                    progress(done, n)
    files = [f"{k:06d}.jpg" for k in range(1, n + 1)]
    with open(root / ATTR_FILE, "w") as fh:
        fh.write(f"{n}\n" + " ".join(ATTRIBUTES) + " \n")  # the real header ends in a space
        for f, row in zip(files, attrs):
            fh.write(f + " " + " ".join(" 1" if v else "-1" for v in row) + "\n")
    train, valid, _ = partition_sizes(n)
    with open(root / PARTITION_FILE, "w") as fh:
        fh.writelines(f"{f} {0 if k < train else 1 if k < train + valid else 2}\n" for k, f in enumerate(files))
    log.info("wrote a CelebA stand-in of %d images to %s", n, root)
    return root
