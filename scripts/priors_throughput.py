"""Prior throughput at a preset's configs: seconds for N fit steps and for sampling 256 grids
(random codes: 32x32, K=512 at `full`, else 4x4, K=16, unless SIDE and K are given).
Usage: python scripts/priors_throughput.py [PRESET] [STEPS] [SIDE K]"""
import dataclasses, json, os, sys, time
import torch
import priors
from priors import CodeSet, NullProgress

preset = sys.argv[1] if len(sys.argv) > 1 else "full"
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 200
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
side, K = (32, 512) if preset == "full" else (4, 16)
if len(sys.argv) > 4:
    side, K = int(sys.argv[3]), int(sys.argv[4])
g = torch.Generator().manual_seed(0)
train = CodeSet(torch.randint(0, K, (2048, side, side), generator=g), K)
val = CodeSet(torch.randint(0, K, (128, side, side), generator=g), K)
out = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "steps": steps}
for name in priors.available_priors():
    cls = priors.get_prior(name)
    cfg = cls.preset(preset)
    if "max_steps" in {f.name for f in dataclasses.fields(cfg)}:
        cfg = dataclasses.replace(cfg, max_steps=steps)
    prior = cls(cfg, num_codes=K, grid=(side, side), device=dev, codebook=torch.randn(K, 64, generator=g))
    def sync():
        if dev.type == "cuda": torch.cuda.synchronize()
    sync(); t0 = time.perf_counter()
    prior.fit(train, val, seed=0, progress=NullProgress())
    sync(); fit_s = time.perf_counter() - t0
    gen = torch.Generator(device=dev).manual_seed(0)
    prior.sample(8, generator=gen); sync()
    t0 = time.perf_counter()
    codes = prior.sample(256, generator=gen); sync()
    sample_s = time.perf_counter() - t0
    ok = codes.shape == (256, side, side) and int(codes.min()) >= 0 and int(codes.max()) < K
    out[name] = {"fit_s": round(fit_s, 2), "sample_256_s": round(sample_s, 3),
                 "grids_per_s": round(256 / sample_s, 1), "valid": bool(ok),
                 "params": prior.num_parameters()}
    print(name, out[name], flush=True)
    if os.environ.get("OUT"):
        open(os.path.join(os.environ["OUT"], "priors_full.json"), "w").write(json.dumps(out, indent=1))
