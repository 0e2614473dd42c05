"""Auth core throughput: chains/s (1 thread and verify_many on all cores) next
to the cost of one bare secp256k1 recovery, and JWT encode/decode rates.

Prints one JSON object. Every figure is the median of --repeats runs.

    python bench/bench_auth.py            # recorded figures (docs/performance.md)
    python bench/bench_auth.py --quick    # smoke run (pytest)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable

from dclcomms import _core
from dclcomms.auth import (
    Identity,
    jwt_decode,
    jwt_encode,
    livekit_token,
    verify_auth_chain,
    verify_many,
)

SEED = 20261122
NOW = 1_748_779_200_000


def _median_rate(fn: Callable[[], int], repeats: int) -> tuple[float, float]:
    """Median ops/s over repeats by wall clock and by this process's CPU time.

    fn runs a batch and returns its op count. The machine is shared: for a
    single thread, CPU time is the figure that does not depend on what else
    runs (the wall figure does); for a thread pool, CPU time is summed over
    threads, so its rate is per core, and only the wall rate shows scaling.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        n = fn()
        w1, c1 = time.perf_counter(), time.process_time()
        wall.append(n / (w1 - w0))
        cpu.append(n / max(c1 - c0, 1e-9))
    return statistics.median(wall), statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per figure (>= 5)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 7)
    n_chain = 40 if args.quick else 3000
    n_batch = 80 if args.quick else 12000
    n_jwt = 200 if args.quick else 100_000

    owner = Identity.generate(SEED)
    eph = owner.create_ephemeral_chain(NOW + 86_400_000)
    challenges = [f"dcl-{i:032x}" for i in range(n_batch)]
    chains = [eph.sign_challenge(c) for c in challenges]
    items = list(zip(chains, challenges, strict=True))
    assert all(r.ok for r in verify_many(items[:50], now_ms=NOW))

    # Distinct inputs, like the chains (one repeated signature would let the
    # branch predictor learn secp256k1's variable-time ecmult and flatter it).
    recoveries = [
        (c.encode(), json.loads(chain)[2]["signature"])
        for c, chain in zip(challenges[:n_chain], chains[:n_chain], strict=True)
    ]

    def bare_recovery() -> int:
        for message, signature in recoveries:
            _core.recover_address(message, signature)
        return n_chain

    def one_thread() -> int:
        for chain, challenge in items[:n_chain]:
            verify_auth_chain(chain, challenge, now_ms=NOW)
        return n_chain

    def batch(threads: int) -> Callable[[], int]:
        def run() -> int:
            verify_many(items, now_ms=NOW, threads=threads)
            return n_batch

        return run

    load_before = os.getloadavg()[0]
    # Recovery and chain batches alternate so that both see the same machine
    # load; the ratio is taken per pair and its median reported.
    rec_rates, chain_rates, chain_walls, ratios = [], [], [], []
    for _ in range(repeats):
        _, r = _median_rate(bare_recovery, 1)
        w, c = _median_rate(one_thread, 1)
        rec_rates.append(r)
        chain_rates.append(c)
        chain_walls.append(w)
        ratios.append(r / (2 * c))
    rec_rate = statistics.median(rec_rates)
    chain_rate = statistics.median(chain_rates)
    chain_wall = statistics.median(chain_walls)
    batch1_wall, batch1_rate = _median_rate(batch(1), repeats)
    cores = os.cpu_count() or 1
    batch_all_wall, batch_all_cpu = _median_rate(batch(0), repeats)

    secret = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"
    claims = {"sub": "0xabc", "room": "island-1", "exp": 2_000_000_000, "iat": 1_700_000_000}
    token = jwt_encode(claims, secret)

    def mint() -> int:
        for _ in range(n_jwt):
            livekit_token("APIkey", secret, identity="0xabc", room="I1", now_s=1_767_225_600)
        return n_jwt

    def encode() -> int:
        for _ in range(n_jwt):
            jwt_encode(claims, secret)
        return n_jwt

    def decode() -> int:
        for _ in range(n_jwt):
            jwt_decode(token, secret, now_s=1_800_000_000, require_exp=True)
        return n_jwt

    _, mint_rate = _median_rate(mint, repeats)
    _, encode_rate = _median_rate(encode, repeats)
    _, decode_rate = _median_rate(decode, repeats)

    recovery_us = 1e6 / rec_rate
    chain_us = 1e6 / chain_rate
    report = {
        "benchmark": "auth",
        "quick": args.quick,
        "repeats": repeats,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cores": cores,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "chain": "3 links: SIGNER, ECDSA_EPHEMERAL, ECDSA_SIGNED_ENTITY",
        "note": "*_cpu figures use process CPU time (robust to other load); *_wall use wall time",
        "bare_recovery_us_cpu": round(recovery_us, 2),
        "chain_1thread_us_cpu": round(chain_us, 2),
        "chains_per_s_1thread_cpu": round(chain_rate),
        "chains_per_s_1thread_wall": round(chain_wall),
        "chains_per_s_verify_many_1thread_cpu": round(batch1_rate),
        "chains_per_s_verify_many_1thread_wall": round(batch1_wall),
        "chains_per_s_verify_many_all_cores_wall": round(batch_all_wall),
        "chains_per_s_verify_many_all_cores_per_core_cpu": round(batch_all_cpu),
        "verify_many_speedup_wall": round(batch_all_wall / batch1_wall, 2),
        "chain_cost_vs_two_recoveries": round(statistics.median(ratios), 3),
        "livekit_token_mint_us_cpu": round(1e6 / mint_rate, 2),
        "livekit_tokens_per_s_cpu": round(mint_rate),
        "jwt_encode_per_s_cpu": round(encode_rate),
        "jwt_decode_per_s_cpu": round(decode_rate),
        "jwt_decode_us_cpu": round(1e6 / decode_rate, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
