#!/usr/bin/env python3
"""Vectorized NumPy (and PyTorch and JAX where installed) versions of two reference recipes,
timed per training epoch for `cargo xtask bench --peers`. Not a test, not a dependency.

two-layer-sigmoid: 784-300 sigmoid-10 softmax, W ~ N(0,1), SGD lr 5, batch 1000 in fixed
order, 50,000 standardized examples.  adam-dropout: 784-400 ReLU-100 ReLU-10 softmax, He
init, inverted dropout keep 0.4/0.5, Adam (0.8, 0.999), batch 256 reshuffled, 60,000 x/255.

Prints one JSON object on stdout; progress on stderr. float32 throughout, like mnist-rs.
"""
import argparse, gzip, json, os, struct, sys, time
from pathlib import Path

try:
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError as missing:
    sys.exit(f"bench/peers.py needs NumPy and threadpoolctl ({missing}); "
             "install them with `pip install -r bench/requirements.txt`")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "mnist"


def idx(name):
    raw = gzip.open(DATA / name, "rb").read()
    magic, n = struct.unpack(">II", raw[:8])
    if magic == 2051:
        r, c = struct.unpack(">II", raw[8:16])
        return np.frombuffer(raw, np.uint8, offset=16).reshape(n, r * c)
    return np.frombuffer(raw, np.uint8, offset=8)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def numpy_two_layer_sigmoid(x, y, rng):
    W1 = rng.standard_normal((784, 300), dtype=np.float32)
    b1 = np.zeros(300, np.float32)
    W2 = rng.standard_normal((300, 10), dtype=np.float32)
    b2 = np.zeros(10, np.float32)
    lr, bs = np.float32(5.0), 1000
    onehot = np.eye(10, dtype=np.float32)[y]

    def epoch(steps=None):
        nonlocal W1, b1, W2, b2
        n = len(x) if steps is None else steps * bs
        for s in range(0, n, bs):
            xb, tb = x[s:s + bs], onehot[s:s + bs]
            h = 1.0 / (1.0 + np.exp(-(xb @ W1 + b1)))
            p = softmax(h @ W2 + b2)
            dz2 = (p - tb) / np.float32(len(xb))
            dh = (dz2 @ W2.T) * h * (1 - h)
            W2 -= lr * (h.T @ dz2); b2 -= lr * dz2.sum(0)
            W1 -= lr * (xb.T @ dh); b1 -= lr * dh.sum(0)
    return epoch


def numpy_adam_dropout(x, y, rng):
    sizes = [784, 400, 100, 10]
    Ws = [(rng.standard_normal((a, b), dtype=np.float32) * np.float32(np.sqrt(2.0 / a))) for a, b in zip(sizes, sizes[1:])]
    bs_ = [np.zeros(b, np.float32) for b in sizes[1:]]
    params = Ws + bs_
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    keep = [0.4, 0.5]
    b1, b2, eps, lr, bs = 0.8, 0.999, 1e-8, 0.005, 256
    onehot = np.eye(10, dtype=np.float32)[y]
    t = [0]

    def epoch(steps=None):
        order = rng.permutation(len(x))
        n = len(x) if steps is None else steps * bs
        for s in range(0, n, bs):
            ix = order[s:s + bs]
            xb, tb = x[ix], onehot[ix]
            acts, masks = [xb], []
            a = xb
            for l in range(2):
                z = a @ Ws[l] + bs_[l]
                mk = (rng.random(z.shape, dtype=np.float32) < keep[l]) / np.float32(keep[l])
                a = np.maximum(z, 0) * mk
                masks.append((z > 0) * mk)
                acts.append(a)
            p = softmax(a @ Ws[2] + bs_[2])
            d = (p - tb) / np.float32(len(xb))
            grads_w, grads_b = [None] * 3, [None] * 3
            for l in (2, 1, 0):
                grads_w[l] = acts[l].T @ d
                grads_b[l] = d.sum(0)
                if l > 0:
                    d = (d @ Ws[l].T) * masks[l - 1]
            t[0] += 1
            c1, c2 = 1 - b1 ** t[0], 1 - b2 ** t[0]
            for k, (p_, g) in enumerate(zip(params, grads_w + grads_b)):
                m[k] *= b1; m[k] += (1 - b1) * g
                v[k] *= b2; v[k] += (1 - b2) * g * g
                p_ -= np.float32(lr) * (m[k] / c1) / (np.sqrt(v[k] / c2) + eps)
    return epoch


def torch_epochs(x_sig, y_sig, x_adam, y_adam, threads):
    import torch
    torch.set_num_threads(threads)
    out = {}
    xs, ys = torch.from_numpy(x_sig), torch.from_numpy(y_sig.astype(np.int64))
    net = torch.nn.Sequential(torch.nn.Linear(784, 300), torch.nn.Sigmoid(), torch.nn.Linear(300, 10))
    opt = torch.optim.SGD(net.parameters(), lr=5.0)
    def sig(steps=None):
        n = len(xs) if steps is None else steps * 1000
        for s in range(0, n, 1000):
            opt.zero_grad(); torch.nn.functional.cross_entropy(net(xs[s:s + 1000]), ys[s:s + 1000]).backward(); opt.step()
    out["two-layer-sigmoid"] = sig
    xa, ya = torch.from_numpy(x_adam), torch.from_numpy(y_adam.astype(np.int64))
    net2 = torch.nn.Sequential(torch.nn.Linear(784, 400), torch.nn.ReLU(), torch.nn.Dropout(0.6),
                               torch.nn.Linear(400, 100), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(100, 10))
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.005, betas=(0.8, 0.999))
    def adam(steps=None):
        order = torch.randperm(len(xa))
        n = len(xa) if steps is None else steps * 256
        for s in range(0, n, 256):
            ix = order[s:s + 256]
            opt2.zero_grad(); torch.nn.functional.cross_entropy(net2(xa[ix]), ya[ix]).backward(); opt2.step()
    out["adam-dropout"] = adam
    return out, f"torch {torch.__version__}"


def jax_epochs(x_sig, y_sig, x_adam, y_adam, threads):
    """The same two recipes as jit-compiled JAX steps (XLA on the CPU, float32)."""
    # XLA's CPU backend has no thread-count setting that it honours: it uses every core the
    # process may run on, so restrict the process to `threads` cores before it starts.
    if hasattr(os, "sched_setaffinity") and threads < len(os.sched_getaffinity(0)):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    import jax
    import jax.numpy as jnp
    key = jax.random.PRNGKey(0)
    out = {}

    xs, ys = jnp.asarray(x_sig), jnp.asarray(y_sig.astype(np.int32))
    k1, k2, key = jax.random.split(key, 3)
    sig_params = [jax.random.normal(k1, (784, 300), jnp.float32), jnp.zeros(300, jnp.float32),
                  jax.random.normal(k2, (300, 10), jnp.float32), jnp.zeros(10, jnp.float32)]

    def sig_loss(p, xb, yb):
        h = jax.nn.sigmoid(xb @ p[0] + p[1])
        logp = jax.nn.log_softmax(h @ p[2] + p[3])
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    @jax.jit
    def sig_step(p, start):
        xb = jax.lax.dynamic_slice_in_dim(xs, start, 1000)
        yb = jax.lax.dynamic_slice_in_dim(ys, start, 1000)
        g = jax.grad(sig_loss)(p, xb, yb)
        return [w - 5.0 * gw for w, gw in zip(p, g)]

    def sig(steps=None):
        nonlocal sig_params
        n = len(x_sig) if steps is None else steps * 1000
        for s in range(0, n, 1000):
            sig_params = sig_step(sig_params, s)
        jax.block_until_ready(sig_params)
    out["two-layer-sigmoid"] = sig

    xa, ya = jnp.asarray(x_adam), jnp.asarray(y_adam.astype(np.int32))
    ks = jax.random.split(key, 4)
    def he(k, i, o):
        return jax.random.normal(k, (i, o), jnp.float32) * np.float32(np.sqrt(2.0 / i))

    adam_params = [he(ks[0], 784, 400), jnp.zeros(400, jnp.float32), he(ks[1], 400, 100),
                   jnp.zeros(100, jnp.float32), he(ks[2], 100, 10), jnp.zeros(10, jnp.float32)]
    state = {"p": adam_params, "m": [jnp.zeros_like(w) for w in adam_params],
             "v": [jnp.zeros_like(w) for w in adam_params], "t": 0, "key": ks[3]}

    def adam_loss(p, xb, yb, key):
        ka, kb = jax.random.split(key)
        h1 = jax.nn.relu(xb @ p[0] + p[1])
        h1 = jnp.where(jax.random.bernoulli(ka, 0.4, h1.shape), h1 / 0.4, 0.0)
        h2 = jax.nn.relu(h1 @ p[2] + p[3])
        h2 = jnp.where(jax.random.bernoulli(kb, 0.5, h2.shape), h2 / 0.5, 0.0)
        logp = jax.nn.log_softmax(h2 @ p[4] + p[5])
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    @jax.jit
    def adam_step(p, m, v, t, ix, key):
        # `t` is the step number after this step (1 for the first), as in the NumPy version.
        g = jax.grad(adam_loss)(p, jnp.take(xa, ix, axis=0), jnp.take(ya, ix), key)
        m = [0.8 * mi + 0.2 * gi for mi, gi in zip(m, g)]
        v = [0.999 * vi + 0.001 * gi * gi for vi, gi in zip(v, g)]
        c1, c2 = 1.0 - 0.8 ** t, 1.0 - 0.999 ** t
        p = [w - 0.005 * (mi / c1) / (jnp.sqrt(vi / c2) + 1e-8) for w, mi, vi in zip(p, m, v)]
        return p, m, v

    rng = np.random.default_rng(1)

    def adam(steps=None):
        order = rng.permutation(len(x_adam)).astype(np.int32)
        n = len(x_adam) if steps is None else steps * 256
        for s in range(0, n, 256):
            state["key"], sub = jax.random.split(state["key"])
            state["t"] += 1
            state["p"], state["m"], state["v"] = adam_step(
                state["p"], state["m"], state["v"], state["t"], order[s:s + 256], sub)
        jax.block_until_ready(state["p"])
    # Compile the last, shorter batch's shape too before timing (a real update; harmless for
    # timing).
    tail = len(x_adam) % 256
    if tail:
        state["p"], state["m"], state["v"] = adam_step(
            state["p"], state["m"], state["v"], 1, np.arange(tail, dtype=np.int32), state["key"])
    out["adam-dropout"] = adam
    return out, f"jax {jax.__version__} (XLA CPU)"


def time_epoch(epoch, reps):
    """All `reps` epoch times after a warm-up; the fastest is reported (the host is shared,
    and slower epochs carry other tenants' noise; `cargo xtask bench` reports its fastest
    round too)."""
    epoch(steps=3)  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter(); epoch(); times.append(time.perf_counter() - t)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    threadpool_limits(args.threads)
    info = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")} for d in threadpool_info()]
    log("numpy", np.__version__, "BLAS:", info)

    images, labels = idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz")
    px = images.astype(np.float32) / np.float32(255.0)
    # two-layer-sigmoid: holdout of 10,000 by a seeded shuffle, standardized on the rest.
    perm = np.random.default_rng(100).permutation(60000)
    tr = perm[10000:]
    mean, std = px[tr].mean(dtype=np.float64), px[tr].std(dtype=np.float64)
    x_sig = ((px[tr] - np.float32(mean)) / np.float32(std)).astype(np.float32)
    y_sig = labels[tr]
    x_adam, y_adam = px, labels

    rng = np.random.default_rng(0)
    runs = []
    for recipe, make, x, y in (("two-layer-sigmoid", numpy_two_layer_sigmoid, x_sig, y_sig),
                               ("adam-dropout", numpy_adam_dropout, x_adam, y_adam)):
        times = time_epoch(make(x, y, rng), args.reps)
        log(f"numpy {recipe}: {min(times):.3f} s/epoch (fastest of {len(times)})")
        runs.append({"recipe": recipe, "framework": f"numpy {np.__version__}", "epoch_seconds": min(times),
                     "epoch_seconds_all": times, "stat": "min"})
    for framework, make in (("torch", torch_epochs), ("jax", jax_epochs)):
        try:
            fns, name = make(x_sig, y_sig, x_adam, y_adam, args.threads)
            for recipe, fn in fns.items():
                times = time_epoch(fn, args.reps)
                log(f"{name} {recipe}: {min(times):.3f} s/epoch (fastest of {len(times)})")
                runs.append({"recipe": recipe, "framework": name, "epoch_seconds": min(times),
                             "epoch_seconds_all": times, "stat": "min"})
        except ImportError:
            log(f"{framework} not installed: skipped")
        except Exception as e:  # a broken install must not lose the other peers' results
            log(f"{framework} failed: {e!r}: skipped")
    print(json.dumps({"threads": args.threads, "blas": info, "runs": runs,
                      "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}}))


if __name__ == "__main__":
    main()
