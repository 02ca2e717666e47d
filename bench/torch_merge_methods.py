#!/usr/bin/python3
"""A plain PyTorch merge script: the peer of `deno task bench:merge` for every merge method.

It merges a base and N fine-tuned safetensors folders tensor by tensor, with the definitions mergekit uses
(mergekit's defaults for normalize / rescale, its per-tensor counts, its quirks), written the way a user
who scripts the merge in torch would write it:

- task vectors in the compute dtype (the file dtype, or --dtype float32), weighted, optionally
  sparsified, optional sign election (`sum`), disjoint mean when the method normalises, added to the base;
- magnitude (ties): keep the trunc(density * n) largest |delta| (argsort of |delta| as float32);
- outliers (breadcrumbs*): drop the trunc(gamma * n) largest, keep the next trunc(density * n); a tensor
  too small to drop any (trunc(gamma * n) = 0) loses its whole delta, as in mergekit;
- random (dare_*): torch.bernoulli keep mask at `density`, L1 rescale of the survivors;
- della*: per row, keep probabilities from density - epsilon to density + epsilon by magnitude rank
  (ranks held in the compute dtype, as mergekit does), torch.bernoulli, L1 rescale;
- linear: the base is one more model, weighted mean; slerp: base + one model, angle of the float32
  vectors normalised when their norm is above 1e-8, plain interpolation when |cos| > 0.9995.

Inputs are memory-mapped copy-on-write (what safetensors' torch loader gives); outputs are held until
5 GB are pending, then written (mergekit's shard rule). Timing starts after torch is imported and ends
when the last output file is written; read the inputs once just before a timed run so that they are in the
page cache (the benchmark does).

    /usr/bin/python3 bench/torch_merge_methods.py --base BASE --models A [B ...] --out OUT \\
        --method ties [--density 0.3] [--gamma 0.01] [--epsilon 0.15] [--t 0.5] [--weight 1] \\
        [--dtype float32] [--threads 1] [--seed 0] [--stable]

`--threads T` sets OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS before torch loads, and
torch.set_num_threads(T). `--stable` (not mergekit) orders equal magnitudes by index (lower first), the
order moekit documents, so that magnitude cuts compare element by element. Prints one JSON line per
method: {"impl", "method", "threads", "dtype", "seconds", "MB_in", "MBps"}; with several methods
(`--method ties,slerp`), each writes OUT/<method>.
"""
import argparse
import json
import math
import mmap
import os
import struct
import time

METHODS = {
    # name: (sparsifier, consensus, normalize, rescale), mergekit's defaults
    "task_arithmetic": (None, None, False, False),
    "ties": ("magnitude", "sum", True, False),
    "breadcrumbs": ("outliers", None, False, False),
    "breadcrumbs_ties": ("outliers", "sum", False, False),
    "dare_linear": ("random", None, False, True),
    "dare_ties": ("random", "sum", False, True),
    "della": ("della", "sum", True, True),
    "della_linear": ("della", None, False, True),
}

cli = argparse.ArgumentParser(description="PyTorch merge peer (mergekit definitions)")
cli.add_argument("--base", required=True)
cli.add_argument("--models", nargs="+", required=True)
cli.add_argument("--out", required=True)
ALL = [*METHODS, "linear", "slerp"]
cli.add_argument("--method", required=True,
                 help=f"one of {', '.join(ALL)}; several, comma-separated, write OUT/<method> each")
cli.add_argument("--weight", type=float, default=1.0)
cli.add_argument("--density", type=float, default=0.3)
cli.add_argument("--gamma", type=float, default=0.01)
cli.add_argument("--epsilon", type=float, default=0.15)
cli.add_argument("--t", type=float, default=0.5)
cli.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None,
                 help="compute dtype (default: the file's)")
cli.add_argument("--threads", type=int, default=1)
cli.add_argument("--seed", type=int, default=0)
cli.add_argument("--stable", action="store_true", help="equal magnitudes: lower index first (not mergekit)")
opt = cli.parse_args()
methods = opt.method.split(",")
for m in methods:
    if m not in ALL:
        cli.error(f"--method {m}: not one of {', '.join(ALL)}")
if "slerp" in methods and len(opt.models) != 1:
    cli.error("slerp merges the base with exactly one model (--models A)")
della, d, e = any(m.startswith("della") for m in methods), opt.density, opt.epsilon
if della and 0 < d < 1 and not (d - e > 0 and d + e < 1):
    cli.error("della: density +/- epsilon must lie in (0, 1)")

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(opt.threads)  # read once, when torch's thread pools load
import torch  # noqa: E402

torch.set_num_threads(opt.threads)
torch.set_num_interop_threads(opt.threads)
torch.manual_seed(opt.seed)

FILE_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}
DTYPE_NAMES = {v: k for k, v in FILE_DTYPES.items()}


class Folder:
    """The tensors of a folder of .safetensors files, mapped copy-on-write."""

    def __init__(self, path):
        self.where, self.order, self.maps = {}, [], []
        if not os.path.isdir(path):
            raise SystemExit(f"{path}: not a folder of .safetensors files")
        for file in sorted(f for f in os.listdir(path) if f.endswith(".safetensors")):
            with open(os.path.join(path, file), "rb") as fh:
                size = struct.unpack("<Q", fh.read(8))[0]
                header = json.loads(fh.read(size))
                view = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
            self.maps.append(view)
            entries = sorted((k, v) for k, v in header.items() if k != "__metadata__")
            for name, info in sorted(entries, key=lambda e: e[1]["data_offsets"][0]):
                self.where[name] = (view, 8 + size + info["data_offsets"][0], info)
                self.order.append(name)
        if not self.order:
            raise SystemExit(f"{path}: no .safetensors file")

    def load(self, name):
        """The tensor (sharing the mapping) and its size in bytes."""
        view, offset, info = self.where[name]
        dtype = FILE_DTYPES[info["dtype"]]
        count = math.prod(info["shape"])
        flat = torch.frombuffer(view, dtype=dtype, count=count, offset=offset) if count else \
            torch.empty(0, dtype=dtype)
        return flat.view(info["shape"]), info["data_offsets"][1] - info["data_offsets"][0]


def l1_matched(full, kept):
    """`kept` scaled so that its L1 norm equals that of `full` (unless either is below 1e-7)."""
    before, after = full.abs().sum(), kept.abs().sum()
    if before < 1e-7 or after < 1e-7:
        return kept
    return kept * (before / after)


def by_magnitude(delta):
    """Flat indices of `delta` from the largest |x| down (float32 magnitudes, as mergekit sorts on CPU)."""
    mags = delta.abs().reshape(-1).float()
    if opt.stable:
        return torch.sort(mags, descending=True, stable=True).indices
    return torch.argsort(mags, descending=True)


def keep_indices(delta, idx, rescale):
    mask = torch.zeros_like(delta)
    mask.view(-1)[idx] = 1
    kept = delta * mask
    return l1_matched(delta, kept) if rescale else kept


def magnitude(delta, rescale):
    if opt.density >= 1:
        return delta
    k = int(opt.density * delta.numel())
    if k == 0:
        raise SystemExit(f"magnitude pruning keeps no entry of a {delta.numel()}-entry tensor: raise --density")
    return keep_indices(delta, by_magnitude(delta)[:k], rescale)


def outliers(delta, rescale):
    if opt.density >= 1:
        return delta
    n = delta.numel()
    keep, top = int(opt.density * n), int(opt.gamma * n)
    top = min(top, n - keep)  # keep exactly `keep` even when the two cuts overlap
    if top == 0:
        return torch.zeros_like(delta)  # mergekit's cut [bottom : n - top] is an empty slice when nothing is dropped on top
    return keep_indices(delta, by_magnitude(delta)[top:top + keep], rescale)


def work_dtype(t):
    # torch.bernoulli has no float16 kernel on CPU: mergekit draws in float32 unless the tensor is bf16
    return t.dtype if t.dtype == torch.bfloat16 else torch.float32


def random_drop(delta, rescale):
    if opt.density >= 1:
        return delta
    w = delta.to(work_dtype(delta))
    kept = w * torch.bernoulli(torch.full_like(w, opt.density))
    return (l1_matched(w, kept) if rescale else kept).to(delta.dtype)


def della_drop(delta, rescale):
    if opt.density >= 1:
        return delta
    wd = work_dtype(delta)
    rows = delta if delta.dim() >= 2 else delta.reshape(1, -1)
    rank = torch.argsort(torch.argsort(rows.abs(), dim=1), dim=1).to(wd) + 1  # 1 = smallest |x|
    lo, hi = rank.min(dim=1, keepdim=True).values, rank.max(dim=1, keepdim=True).values
    frac = ((rank - lo) / (hi - lo)).clamp(0, 1)
    keep_p = (opt.density - opt.epsilon) + frac * (2 * opt.epsilon)
    w = rows.to(wd)
    kept = w * torch.bernoulli(keep_p).to(wd)
    return (l1_matched(w, kept) if rescale else kept).to(delta.dtype).reshape(delta.shape)


SPARSIFIERS = {"magnitude": magnitude, "outliers": outliers, "random": random_drop, "della": della_drop}


def task_vector_merge(method, base, others):
    sparsifier, consensus, normalize, rescale = METHODS[method]
    deltas = []
    for x in others:
        d = x.to(base.dtype) - base
        if sparsifier:
            d = SPARSIFIERS[sparsifier](d, rescale)
        deltas.append(d)
    stacked = torch.stack(deltas)
    del deltas
    w = torch.full((len(others),) + (1,) * base.dim(), opt.weight, dtype=stacked.dtype)
    weighted = stacked * w
    del stacked
    if consensus:
        elected = (weighted.sum(dim=0) >= 0).to(weighted.dtype) * 2 - 1  # sign of the total, 0 counts as +
        agree = weighted.sign() == elected
        mixed = (weighted * agree).sum(dim=0)
        divisor = (w * agree).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = weighted.sum(dim=0)
        divisor = w.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed = mixed / divisor
    return (base + mixed).to(base.dtype)


def linear_merge(_method, base, others):
    stacked = torch.stack([base] + [x.to(base.dtype) for x in others])
    w = torch.full((stacked.shape[0],) + (1,) * base.dim(), opt.weight, dtype=stacked.dtype)
    return ((stacked * w).sum(dim=0) / w.sum(dim=0)).to(base.dtype)


def slerp_merge(_method, base, others):
    v0, v1 = base.float(), others[0].float()  # mergekit interpolates float32 copies
    n0, n1 = float(torch.linalg.vector_norm(v0)), float(torch.linalg.vector_norm(v1))
    cos = float(torch.dot(v0.reshape(-1), v1.reshape(-1))) / ((n0 if n0 > 1e-8 else 1) * (n1 if n1 > 1e-8 else 1))
    t = opt.t
    if abs(cos) > 0.9995:
        a, b = 1 - t, t
    else:
        theta = math.acos(cos)
        a, b = math.sin((1 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)
    out = v0 * a
    out.add_(v1, alpha=b)
    return out.to(base.dtype)


def write_shard(path, tensors):
    header, offset = {}, 0
    for name, t in tensors.items():
        size = t.numel() * t.element_size()
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path + ".part", "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for t in tensors.values():
            t = t.contiguous()
            f.write((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy())
    os.replace(path + ".part", path)


SHARD = 5 * 1000 ** 3  # outputs wait until this many bytes are pending, then go to one shard


def run(method, out):
    """Merges every tensor of the base with `method` into the folder `out`; returns (seconds, bytes read)."""
    start = time.perf_counter()
    base_folder = Folder(opt.base)
    model_folders = [Folder(m) for m in opt.models]
    compute = getattr(torch, opt.dtype) if opt.dtype else None
    merge = {"linear": linear_merge, "slerp": slerp_merge}.get(method, task_vector_merge)
    os.makedirs(out, exist_ok=True)
    pending, shards, weight_map = {}, [], {}
    pending_bytes = bytes_in = 0

    def flush():
        name = f"model-{len(shards) + 1:05d}.safetensors"
        write_shard(os.path.join(out, name), pending)
        shards.append(name)
        weight_map.update({k: name for k in pending})
        pending.clear()

    for name in base_folder.order:
        loaded = []
        for folder in [base_folder, *model_folders]:
            if name not in folder.where:
                raise SystemExit(f"{name}: missing from one of the models")
            t, size = folder.load(name)
            bytes_in += size
            loaded.append(t if compute is None or t.dtype == compute else t.to(compute))
        if any(t.shape != loaded[0].shape for t in loaded):
            raise SystemExit(f"{name}: shapes differ ({[list(t.shape) for t in loaded]}); this peer merges equal shapes")
        result = merge(method, loaded[0], loaded[1:]).contiguous()
        del loaded
        size = result.numel() * result.element_size()
        if pending and pending_bytes + size > SHARD:
            flush()
            pending_bytes = 0
        pending[name] = result
        pending_bytes += size
    if pending:
        flush()
    if len(shards) == 1:
        os.replace(os.path.join(out, shards[0]), os.path.join(out, "model.safetensors"))
    else:
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return time.perf_counter() - start, bytes_in


for method in methods:
    seconds, bytes_in = run(method, opt.out if len(methods) == 1 else os.path.join(opt.out, method))
    print(json.dumps({"impl": "torch", "method": method, "threads": opt.threads, "dtype": opt.dtype or "file",
                      "seconds": round(seconds, 3), "MB_in": round(bytes_in / 1e6, 1),
                      "MBps": round(bytes_in / 1e6 / seconds, 2)}), flush=True)
