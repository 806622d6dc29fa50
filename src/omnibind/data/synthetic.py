"""Built-in generated data with a known ground truth: ``builtin:shapes`` and ``builtin:xor``.

``shapes`` is the demo, test and benchmark data set: scenes of one coloured shape, seen as an image, told
in a caption, heard as a sound and measured in a small table. Its facts are spread over the modalities so
that some are in every modality, some in a few, and three only in the combination of three modalities
(``u XOR v = w``), the case that pairwise objectives cannot learn and Symile's joint score can.

``xor`` is the synthetic process of the Symile paper (Saporta et al., 2024, Sec. 5.1): bit vectors ``a``
and ``b`` and ``c = a XOR b`` with probability ``p``, else ``c = a``.

Both are deterministic for a seed, vectorised (``shapes(n=3000)`` takes about a second on one core), and
hold their values in memory. ``docs/builtin-data.md`` has the full description and the fact tables.
"""

from __future__ import annotations

import re

import numpy as np

from omnibind.data.record import Record
from omnibind.data.sources import SOURCES, FactSpec, LoadedData

SHAPES = ["circle", "square", "triangle", "cross"]
COLOURS = ["red", "green", "blue", "yellow"]
SIZES = ["small", "large"]
POSITIONS = ["left", "right"]
SHAPES_MODALITIES = {"image": "image", "caption": "text", "sound": "audio", "table": "tabular"}

# Fact -> carriers. The three bits are joint: each is its owner's own value and can be read only from the
# other two modalities together (mark = tone XOR timbre, and so on), never from one other modality alone.
SHAPES_FACTS = {
    "shape": FactSpec(carriers=["image", "caption", "sound"]),
    "colour": FactSpec(carriers=["image", "caption", "sound"]),
    "size": FactSpec(carriers=["image", "caption", "table"]),
    "position": FactSpec(carriers=["image", "caption", "table"]),
    "mark": FactSpec(carriers=["image", "caption", "sound"], joint=True, owner="image"),
    "tone": FactSpec(carriers=["image", "caption", "sound"], joint=True, owner="caption"),
    "timbre": FactSpec(carriers=["image", "caption", "sound"], joint=True, owner="sound"),
}

_RGB = np.array([[215, 40, 40], [40, 170, 60], [40, 80, 220], [235, 205, 35]], dtype=np.float64)
_PITCH_HZ = np.array([330.0, 440.0, 587.33, 783.99])  # E4, A4, D5, G5: colour -> pitch
# Shape -> rhythm: (start, end) of each beep as fractions of the clip.
_RHYTHMS = [
    [(0.10, 0.30)],  # circle: one short beep
    [(0.10, 0.25), (0.45, 0.60)],  # square: two beeps
    [(0.06, 0.18), (0.36, 0.48), (0.66, 0.78)],  # triangle: three beeps
    [(0.08, 0.88)],  # cross: one long tone
]
_WORDS = {
    "circle": ["circle", "disc", "round shape"],
    "square": ["square", "box", "block"],
    "triangle": ["triangle", "wedge", "three-sided shape"],
    "cross": ["cross", "plus sign", "plus shape"],
    "red": ["red", "crimson", "scarlet"],
    "green": ["green", "emerald", "lime"],
    "blue": ["blue", "azure", "navy"],
    "yellow": ["yellow", "golden", "lemon"],
    "small": ["small", "little", "tiny"],
    "large": ["large", "big", "huge"],
    "left": ["on the left", "at left", "on the left side", "toward the left"],
    "right": ["on the right", "at right", "on the right side", "toward the right"],
    # The caption's own bit ("tone"): a time of day, which nothing in the scene shows.
    "tone0": ["seen at dawn", "in the early morning", "at sunrise"],
    "tone1": ["seen at dusk", "in the late evening", "at sunset"],
}
_TEMPLATES = [
    "a {size} {colour} {shape} {position}, {tone}",
    "{position} there is a {size} {colour} {shape}, {tone}",
    "{tone}: a {colour} {shape}, {size}, {position}",
    "the {shape} is {colour} and {size}, placed {position}; {tone}",
    "picture of a {size} {shape} in {colour} {position}, {tone}",
]


def xor_bayes_accuracy(d_v: int, p: float) -> float:
    """Best possible accuracy of picking ``b`` among all ``2**d_v`` bit vectors given ``(a, c)`` (``xor``).

    If ``c != a`` the item must be an XOR item and ``b = a XOR c`` is certain. If ``c == a``, either it is
    an XOR item with ``b = 0`` (probability ``p / 2**d_v``) or a copy item with ``b`` uniform (``1 - p``), so
    the best guess is ``b = 0``, right with probability ``2**-d_v / (p 2**-d_v + 1 - p)``. Summed::

        acc = p (1 - 2**-d_v) + 2**-d_v = p + (1 - p) / 2**d_v

    which is 0.516 for ``d_v = 5, p = 0.5``, chance (1/32) at ``p = 0`` and 1 at ``p = 1``.
    """
    return p + (1.0 - p) / 2.0**d_v


def _bits(row: np.ndarray) -> str:
    return "".join("1" if x else "0" for x in row)


@SOURCES.register("xor")
def xor(
    n_train: int = 10000, n_val: int = 1000, n_test: int = 5000, d_v: int = 5, p: float = 1.0, seed: int = 0
) -> LoadedData:
    """The Symile paper's synthetic XOR process: three modalities of ``d_v`` fair bits each.

    Per item, ``a`` and ``b`` hold ``d_v`` independent fair bits; with probability ``p`` the item is an XOR
    item and ``c = a XOR b`` elementwise, otherwise ``c = a``. Any one or two of ``a, b, c`` say nothing
    about ``b`` given only one other (pairwise mutual information with ``b`` is zero), so pairwise
    objectives stay at chance when predicting ``b``; ``(a, c)`` together reveal it with accuracy
    :func:`xor_bayes_accuracy`.

    Args:
        n_train, n_val, n_test: items per split (records are in that order).
        d_v: bits per modality.
        p: probability that an item is an XOR item.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        :class:`LoadedData` whose records have values ``a``, ``b``, ``c`` (float32 arrays of 0/1, shape
        ``[d_v]``, modality kind ``embedding``), facts ``{"a": "01011", "b": ..., "c": ...}`` (bit strings),
        label the ``b`` bit string and ``metadata["xor"]`` (1 for an XOR item). ``facts`` declares each of
        ``a``, ``b``, ``c`` a joint fact owned by its modality and carried by all three: a composed query
        of the other two (``a+c->b``) is relevant to every target with the same bits. At ``p = 1`` the
        other two determine it (``b = a XOR c``); at ``p < 1`` they do so only for the XOR items (for a copy
        item, ``c == a``, ``b`` is uniform), so no model can exceed :func:`xor_bayes_accuracy`. A single
        query modality (``a->b``) counts no fact: relevance is then an identical target value, which no
        pair of modalities can predict (chance).

    References:
        Saporta et al., "Contrasting with Symile", NeurIPS 2024, Sec. 5.1.

    Example:
        >>> data = xor(n_train=8, n_val=0, n_test=4, d_v=3, p=1.0)
        >>> r = data.records[0]
        >>> bool(((r.values["a"] + r.values["b"]) % 2 == r.values["c"]).all())
        True
    """
    if min(n_train, n_val, n_test) < 0 or d_v < 1 or not 0.0 <= p <= 1.0:
        raise ValueError(f"xor: need n_* >= 0, d_v >= 1 and 0 <= p <= 1; got d_v={d_v}, p={p}")
    n = n_train + n_val + n_test
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, size=(n, d_v), dtype=np.int8)
    b = rng.integers(0, 2, size=(n, d_v), dtype=np.int8)
    is_xor = rng.random(n) < p
    c = np.where(is_xor[:, None], a ^ b, a)
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    arrays = {"a": a.astype(np.float32), "b": b.astype(np.float32), "c": c.astype(np.float32)}
    records = []
    for i in range(n):
        facts = {"a": _bits(a[i]), "b": _bits(b[i]), "c": _bits(c[i])}
        records.append(
            Record(
                id=f"xor-{i}",
                values={m: v[i] for m, v in arrays.items()},
                label=facts["b"],
                split=splits[i],
                facts=facts,
                metadata={"xor": int(is_xor[i])},
                source="builtin:xor",
            )
        )
    info = {
        "kinds": {"a": "embedding", "b": "embedding", "c": "embedding"},
        "d_v": d_v,
        "p": p,
        "chance": 2.0**-d_v,
        "bayes_accuracy": xor_bayes_accuracy(d_v, p),
    }
    # each bit vector is its own modality's value and, at p = 1, a function of the other two together
    # (b = a XOR c, ...): a joint fact like the shapes' mark, so a+c->b counts b's value
    specs = {m: FactSpec(carriers=["a", "b", "c"], joint=True, owner=m) for m in ("a", "b", "c")}
    return LoadedData(records=records, facts=specs, name="xor", info=info)


def _shape_masks(shape: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, size: int) -> np.ndarray:
    """Boolean masks ``[n, size, size]`` of each item's shape (index into SHAPES), centre and radius."""
    grid = np.arange(size, dtype=np.float64) + 0.5
    dx = grid[None, None, :] - cx[:, None, None]  # [n, 1, S]
    dy = grid[None, :, None] - cy[:, None, None]  # [n, S, 1]
    rr = r[:, None, None]
    adx, ady = np.abs(dx), np.abs(dy)
    masks = [
        dx**2 + dy**2 <= rr**2,
        (adx <= 0.85 * rr) & (ady <= 0.85 * rr),  # side 1.7 r: about the circle's area
        (dy >= -rr) & (dy <= 0.8 * rr) & (adx <= 0.6 * (dy + rr)),  # apex up
        ((adx <= rr) & (ady <= 0.3 * rr)) | ((ady <= rr) & (adx <= 0.3 * rr)),
    ]
    return np.select([shape[:, None, None] == k for k in range(len(SHAPES))], masks, default=False)


def _render_images(rng: np.random.Generator, f: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Images ``[n, size, size, 3]`` uint8 of the scenes in ``f`` (see :func:`shapes`)."""
    n = len(f["shape"])
    background = 225.0 + rng.uniform(-12, 12, size=(n, 1, 1, 3))
    img = background + rng.normal(0.0, 6.0, size=(n, size, size, 3))
    mask = _shape_masks(f["shape"], f["cx"] * size, f["cy"] * size, f["r"] * size, size)
    rgb = _RGB[f["colour"]] + rng.uniform(-20, 20, size=(n, 3))  # [n, 3]
    img = np.where(mask[..., None], rgb[:, None, None, :] + rng.normal(0, 4.0, img.shape), img)
    # The mark is a dark frame around the whole picture: a global feature, so that a small image
    # encoder carries it strongly (a corner dot was readable but too faint for Symile to pick up).
    width = max(1, round(size / 16))  # 2 px at 32
    marked = f["mark"] == 1
    for band in (np.s_[:width, :], np.s_[-width:, :], np.s_[:, :width], np.s_[:, -width:]):
        img[(marked, *band)] = 40.0
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _captions(rng: np.random.Generator, f: dict[str, np.ndarray]) -> list[str]:
    """One caption per scene: shape, colour, size and position in varied words, plus the tone phrase."""
    n = len(f["shape"])
    choice = rng.integers(0, 1 << 30, size=(n, 6))
    out = []
    for i in range(n):
        keys = {
            "shape": SHAPES[f["shape"][i]],
            "colour": COLOURS[f["colour"][i]],
            "size": SIZES[f["size"][i]],
            "position": POSITIONS[f["position"][i]],
            "tone": f"tone{f['tone'][i]}",
        }
        words = {k: _WORDS[v][choice[i, j] % len(_WORDS[v])] for j, (k, v) in enumerate(keys.items())}
        text = _TEMPLATES[choice[i, 5] % len(_TEMPLATES)].format(**words)
        text = re.sub(r"\ba ([aeiou])", r"an \1", text)
        out.append(text[0].upper() + text[1:])
    return out


def _render_sounds(
    rng: np.random.Generator, f: dict[str, np.ndarray], sample_rate: int, seconds: float
) -> np.ndarray:
    """Waveforms ``[n, T]`` float32 in [-1, 1]: pitch from colour, rhythm from shape, timbre from ``w``."""
    n, length = len(f["shape"]), max(1, round(seconds * sample_rate))
    out = np.empty((n, length), dtype=np.float32)
    f0 = _PITCH_HZ[f["colour"]] * (1.0 + rng.uniform(-0.015, 0.015, n))
    shift = rng.uniform(-0.04, 0.04, n)  # onset jitter, fraction of the clip
    gain = rng.uniform(0.5, 0.8, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    frac = np.arange(length) / length  # [T]
    ramp = max(1.0, 0.005 * sample_rate)  # 5 ms fade in/out, no clicks
    for start in range(0, n, 512):  # chunks keep the float64 temporaries small
        sl = slice(start, min(n, start + 512))
        t = np.arange(length)[None, :] / sample_rate  # [1, T]
        arg = 2 * np.pi * f0[sl, None] * t + phase[sl, None]  # [b, T]
        # Timbre bit w: off = pure sine; on = strong 2nd and 3rd harmonics (extra mel lines).
        bright = f["timbre"][sl, None].astype(np.float64)
        wave = (np.sin(arg) + bright * (0.6 * np.sin(2 * arg) + 0.4 * np.sin(3 * arg))) / (1 + bright)
        env = np.zeros_like(wave)
        for k, beeps in enumerate(_RHYTHMS):
            rows = np.flatnonzero(f["shape"][sl] == k)
            for b0, b1 in beeps:
                pos = (frac[None, :] - shift[sl][rows, None]) * length  # [r, T] samples
                on = np.minimum(pos - b0 * length, b1 * length - pos) / ramp
                env[rows] = np.maximum(env[rows], np.clip(on, 0.0, 1.0))
        noisy = gain[sl, None] * env * wave + rng.normal(0.0, 0.01, wave.shape)
        out[sl] = np.clip(noisy, -1.0, 1.0)
    return out


def _tables(rng: np.random.Generator, f: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """Noisy measurements, as fractions of the image: width and height (2 r), centre x and y."""
    n = len(f["shape"])
    noise = rng.normal(0.0, 0.02, size=(n, 4))
    cols = np.stack([2 * f["r"], 2 * f["r"], f["cx"], f["cy"]], axis=1) + noise
    return [
        dict(zip(("width", "height", "x", "y"), map(float, np.round(row, 4)), strict=True)) for row in cols
    ]


def _presence(rng: np.random.Generator, n: int, m: int, missing: float) -> np.ndarray:
    """``[n, m]`` bool: each modality present with probability ``1 - missing``, at least one per row."""
    present = rng.random((n, m)) >= missing
    empty = ~present.any(axis=1)
    while empty.any():  # redraw rows with nothing present: the drop is conditioned on >= 1 present
        present[empty] = rng.random((int(empty.sum()), m)) >= missing
        empty = ~present.any(axis=1)
    return present


# Facts whose carriers `only` may narrow (the joint bits are defined by their XOR and stay as they are).
_MOVABLE = {"shape": 4, "colour": 4, "size": 2, "position": 2}


def parse_only(only: str | dict[str, list[str]] | None) -> dict[str, list[str]]:
    """``only`` of :func:`shapes` as ``{fact: [modality, ...]}``, checked against the fact table.

    A string lists ``fact:modality`` pairs separated by commas; several modalities of one fact are joined
    by ``/`` or ``+`` (in a query string ``+`` arrives as a space, which is accepted too):
    ``"size:table"``, ``"colour:image/caption,position:table"``.

    Raises:
        ValueError: an unknown or joint fact, or a modality that does not carry the fact by default.
    """
    if not only:
        return {}
    if isinstance(only, str):
        parsed: dict[str, list[str]] = {}
        for part in only.split(","):
            fact, sep, mods = part.partition(":")
            if not sep or not fact.strip():
                raise ValueError(f"shapes: only expects 'fact:modality[/modality]' pairs, got {part!r}")
            parsed[fact.strip()] = re.split(r"[/+\s]+", mods.strip())
        only = parsed
    out = {}
    for fact, mods in only.items():
        if fact not in _MOVABLE:
            raise ValueError(
                f"shapes: only can narrow {', '.join(_MOVABLE)}, not {fact!r} "
                "(mark, tone and timbre are tied together by their XOR)"
            )
        carriers = SHAPES_FACTS[fact].carriers
        if isinstance(mods, str):  # {size: table}, as YAML reads "size: table"
            mods = re.split(r"[/+\s]+", mods.strip())
        mods = [m for m in mods if m]
        bad = [m for m in mods if m not in carriers]
        if not mods or bad:
            raise ValueError(
                f"shapes: only.{fact} must name some of its carriers {', '.join(carriers)}, got {mods!r}"
            )
        out[fact] = mods
    return out


def _decoys(
    rng: np.random.Generator, f: dict[str, np.ndarray], only: dict[str, list[str]]
) -> dict[str, dict[str, np.ndarray]]:
    """Per modality, the scene facts it shows: the true ones, or an independent draw where ``only`` hides one.

    A hidden fact is replaced by a fresh uniform value (drawn independently for every modality), so the
    modality still looks like a normal scene but says nothing about the true value.
    """
    n = len(f["shape"])
    per: dict[str, dict[str, np.ndarray]] = {m: dict(f) for m in SHAPES_MODALITIES}
    for fact, keep in only.items():
        for m in SHAPES_FACTS[fact].carriers:
            if m not in keep:
                per[m][fact] = rng.integers(0, _MOVABLE[fact], n)
    for facts in per.values():  # geometry follows the (possibly decoy) size and position
        facts["r"] = np.where(facts["size"] == 1, 0.24, 0.14) * (1 + f["r_jitter"])
        facts["cx"] = np.where(facts["position"] == 1, 0.70, 0.30) + f["cx_jitter"]
    return per


@SOURCES.register("shapes")
def shapes(
    n: int = 3000,
    seed: int = 0,
    image_size: int = 32,
    sample_rate: int = 8000,
    seconds: float = 0.5,
    missing: float = 0.0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    only: str | dict[str, list[str]] | None = None,
    captions: int = 1,
) -> LoadedData:
    """Scenes of one coloured shape in four modalities, with facts spread over them (see module docs).

    Each scene draws independently: shape (circle, square, triangle, cross), colour (red, green, blue,
    yellow), size (small, large), position (left, right), and two fair bits ``mark`` (u) and ``tone`` (v);
    ``timbre`` is ``w = u XOR v``. The modalities carry:

    - ``image``: uint8 ``[image_size, image_size, 3]``; the shape in its colour (RGB jitter), size and side
      (random vertical offset and jitter) on a lightly noisy grey background, plus a dark frame around
      the picture iff ``mark`` = 1.
    - ``caption``: str; shape, colour, size and position in one of several templates with synonyms, ending
      in a time-of-day phrase: dawn / early morning / sunrise iff ``tone`` = 0, dusk / late evening /
      sunset iff 1.
    - ``sound``: float32 ``[round(seconds * sample_rate)]`` in [-1, 1]; pitch = colour (330, 440, 587,
      784 Hz, +-1.5 %), rhythm = shape (1 short beep, 2 beeps, 3 beeps, 1 long tone), and pure sine iff
      ``timbre`` = 0, strong 2nd and 3rd harmonics iff 1; a little noise.
    - ``table``: ``{"width", "height", "x", "y"}``, floats, noisy measurements of size and position.

    ``mark``, ``tone`` and ``timbre`` are each one modality's own bit and pairwise independent: no single
    other modality says anything about it, only the other two together (``u = v XOR w`` etc.). A pairwise
    objective (CLIP over pairs) therefore cannot align them; Symile's joint score can.

    Args:
        n: number of items.
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same records.
        image_size: side of the square image in pixels.
        sample_rate: audio sample rate in Hz (keep >= 8000: the highest harmonic is 3 x 784 Hz).
        seconds: audio clip length.
        missing: probability that each modality of an item is absent, independently, redrawn for items
            that would lose all four.
        val_fraction: share of items in the ``val`` split (random items).
        test_fraction: share of items in the ``test`` split; the rest are ``train``.
        only: put scene facts in chosen modalities only, for diagnostics with a known answer:
            ``"size:table"`` keeps the true size in the table and makes the image and the caption show an
            independently drawn size instead; ``"colour:image/caption,shape:sound"`` narrows two facts
            (see :func:`parse_only`). Movable: shape, colour, size, position, each within its default
            carriers. The fact table and ``info["carriers"]`` follow. Default: every carrier is truthful.
        captions: wordings per scene; above 1 the caption is a list of that many independently worded
            captions of the same facts (the first is the one-caption value), for a ``multi: true`` caption.

    Returns:
        :class:`LoadedData` with records (facts ``shape, colour, size, position`` as names, ``mark, tone,
        timbre`` as 0/1; label ``"{colour} {shape}"``), the fact table :data:`SHAPES_FACTS`, and ``info``
        holding the class lists, the modality kinds and the fact -> carriers table.

    References:
        Saporta et al., "Contrasting with Symile", NeurIPS 2024 (the XOR construction).

    Example:
        >>> data = shapes(n=16, seed=1)
        >>> r = data.records[0]
        >>> r.values["image"].shape, r.facts["timbre"] == r.facts["mark"] ^ r.facts["tone"]
        ((32, 32, 3), True)
    """
    placed = parse_only(only)
    if captions < 1:
        raise ValueError(f"shapes: captions must be >= 1, got {captions}")
    if n < 1 or image_size < 8 or not 0.0 <= missing < 1.0 or val_fraction + test_fraction > 1.0:
        raise ValueError(
            f"shapes: need n >= 1, image_size >= 8, 0 <= missing < 1 and val + test fractions <= 1; "
            f"got n={n}, image_size={image_size}, missing={missing}"
        )
    # One stream per part, so that e.g. a different `missing` or image_size keeps the same scenes.
    r_fact, r_img, r_cap, r_snd, r_tab, r_miss, r_split = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(7)
    )
    r_decoy = np.random.default_rng(np.random.SeedSequence(seed).spawn(8)[7])  # `only`: spawn 0-6 unchanged
    f = {
        "shape": r_fact.integers(0, 4, n),
        "colour": r_fact.integers(0, 4, n),
        "size": r_fact.integers(0, 2, n),
        "position": r_fact.integers(0, 2, n),
        "mark": r_fact.integers(0, 2, n),
        "tone": r_fact.integers(0, 2, n),
    }
    f["timbre"] = f["mark"] ^ f["tone"]
    # Geometry as fractions of the image side; radius leaves room for the mark frame.
    f["r_jitter"] = r_fact.uniform(-0.08, 0.08, n)
    f["cx_jitter"] = r_fact.uniform(-0.04, 0.04, n)
    f["cy"] = r_fact.uniform(0.36, 0.64, n)
    seen = _decoys(r_decoy, f, placed)  # modality -> the facts it shows (the true ones unless `only`)

    values = {
        "image": _render_images(r_img, seen["image"], image_size),
        "caption": _captions(r_cap, seen["caption"]),
        "sound": _render_sounds(r_snd, seen["sound"], sample_rate, seconds),
        "table": _tables(r_tab, seen["table"]),
    }
    if captions > 1:  # its own stream, so the first wording and everything else stay as with one
        r_more = np.random.default_rng(np.random.SeedSequence(seed).spawn(9)[8])
        more = [_captions(r_more, seen["caption"]) for _ in range(captions - 1)]
        values["caption"] = [[c, *(m[i] for m in more)] for i, c in enumerate(values["caption"])]
    names = list(values)
    present = _presence(r_miss, n, len(names), missing)
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    split = np.full(n, "train", dtype=object)
    order = r_split.permutation(n)
    split[order[:n_val]] = "val"
    split[order[n_val : n_val + n_test]] = "test"

    classes = {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "position": POSITIONS}
    width = len(str(n - 1))
    records = []
    for i in range(n):
        facts: dict[str, str | int] = {k: v[int(f[k][i])] for k, v in classes.items()}
        facts.update({k: int(f[k][i]) for k in ("mark", "tone", "timbre")})
        records.append(
            Record(
                id=f"shapes-{i:0{width}d}",
                values={m: values[m][i] for j, m in enumerate(names) if present[i, j]},
                label=f"{facts['colour']} {facts['shape']}",
                split=str(split[i]),
                facts=facts,
                source="builtin:shapes",
            )
        )
    facts_table = {
        k: FactSpec(list(placed.get(k, s.carriers)), s.joint, s.owner) for k, s in SHAPES_FACTS.items()
    }
    info = {
        "shapes": SHAPES,
        "colours": COLOURS,
        "sizes": SIZES,
        "positions": POSITIONS,
        "kinds": SHAPES_MODALITIES,
        "image_size": image_size,
        "sample_rate": sample_rate,
        "carriers": {k: list(s.carriers) for k, s in facts_table.items()},
        "joint": {k: s.owner for k, s in SHAPES_FACTS.items() if s.joint},
    }
    return LoadedData(records=records, facts=facts_table, name="shapes", info=info)
