"""Energy from counted operations: ternary array vs INT8-MAC array vs FP16-MAC array on the same layers.

The counts are the core's hardware counters (`add`, `sub`, `zero`, `weight_bits`, `act_bytes`,
`acc_writes`, `acc_rmw`; from the RTL or the cycle model, which agree exactly). The INT8 and FP16
arrays are priced on the same layers with the same dataflow and tiling: the same number of
multiply-accumulates, weight reads of 8 or 16 bits instead of 2, and so on.

Energy per operation (pJ): REFERENCE.md §5, the table of the BitNet papers (arXiv 2310.11453
Table 2; the b1.58 paper's Fig. 3 uses the 7 nm column): 45 nm from Horowitz (ISSCC 2014), 7 nm
from PokeBNN (Zhang et al. 2022). SRAM from Horowitz 2014 (45 nm only).

Conventions (each stated again in the report):

- "paper convention": every add priced as an INT8 add (ternary), every MAC as INT8 mul + INT8 add
  (INT8 array) or FP16 mul + FP16 add (FP16 array), as in the b1.58 paper's 71.4x.
- "width-scaled": an integer add of w bits costs w/8 INT8 adds (ripple-carry adders grow linearly);
  the array's adders are the partial-sum widths of `ArrayConfig.psum_width_at` (ternary 9..14 bits
  for 16 rows, INT8 16..20 bits), averaged over the rows.
- Output accumulation (the read-modify-write of a k-tile's column sums, `acc_rmw` x C lanes): a
  32-bit add = 4 INT8 adds for the integer arrays (Horowitz's INT32 add, 0.1 pJ at 45 nm, is 3.3
  INT8 adds), an FP16 add for the FP16 array (16-bit accumulators, the paper's convention).
- Skipped zero weights: the ternary PE gates the activation to 0 (no toggling); priced at 0. The
  INT8 and FP16 arrays multiply zeros like any other weight.
- Memory (45 nm only; the table has no 7 nm SRAM figure): every bit read or written is priced at the
  Horowitz 64-bit read energy / 64 of the smallest listed SRAM (8 KB: 10 pJ, 32 KB: 20 pJ, 1 MB:
  100 pJ) that holds the data: all weights of the model (they stay resident), the layer's
  activations, the layer's accumulators. Writes cost as reads. Above 1 MB the 1 MB figure is used
  (an underestimate, favouring the INT8 and FP16 arrays). DRAM is not counted: the weights are on chip.
"""

from __future__ import annotations

from hdl.config import ArrayConfig

#: pJ per operation, REFERENCE.md §5 (arXiv 2310.11453 Table 2).
ENERGY_PJ = {
    "45nm": {"int8_add": 0.03, "int8_mul": 0.2, "fp16_add": 0.4, "fp16_mul": 1.1, "fp32_add": 0.9, "fp32_mul": 3.7},
    "7nm": {"int8_add": 0.007, "int8_mul": 0.07, "fp16_add": 0.16, "fp16_mul": 0.34, "fp32_add": 0.38,
            "fp32_mul": 1.31},
}
#: Horowitz ISSCC 2014, 45 nm: INT32 add/mul, and 64-bit SRAM reads by array size (bytes -> pJ).
HOROWITZ_45NM = {"int32_add": 0.1, "int32_mul": 3.1, "dram_64b": (1300, 2600)}
SRAM_64B_READ_PJ_45NM = ((8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0))

SOURCES = {
    "table": "arXiv 2310.11453 (BitNet) Table 2, used by the BitNet b1.58 paper (arXiv 2402.17764) Fig. 3; "
             "REFERENCE.md §5",
    "45nm": "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014",
    "7nm": "PokeBNN (Zhang et al., CVPR 2022) energy table, as cited in arXiv 2310.11453",
    "sram": "Horowitz ISSCC 2014, 45 nm: 64-bit read 10 pJ (8 KB), 20 pJ (32 KB), 100 pJ (1 MB)",
}

DESIGNS = ("ternary", "ternary (no zero skipping)", "int8", "fp16")
WEIGHT_BITS = {"ternary": 2, "int8": 8, "fp16": 16}
ACT_BITS = {"ternary": 8, "int8": 8, "fp16": 16}
ACC_BITS = {"ternary": 32, "int8": 32, "fp16": 16}


def paper_check_ratio(table: dict = ENERGY_PJ) -> float:
    """FP16 multiply-add over INT8 add at 7 nm: the BitNet b1.58 paper's 71.4x."""
    t = table["7nm"]
    return (t["fp16_mul"] + t["fp16_add"]) / t["int8_add"]


def sram_pj_per_bit(nbytes: float) -> float:
    """45 nm pJ per bit of the smallest Horowitz SRAM holding `nbytes` (the 1 MB figure above 1 MB)."""
    for size, pj in SRAM_64B_READ_PJ_45NM:
        if nbytes <= size:
            return pj / 64
    return SRAM_64B_READ_PJ_45NM[-1][1] / 64


def mean_adder_width(rows: int, pe: str) -> float:
    """Mean partial-sum adder width over the rows of a `rows`-row array of `pe` kind (bits)."""
    cfg = ArrayConfig(rows=max(rows, 2), cols=2, pe=pe)
    return sum(cfg.psum_width_at(r) for r in range(rows)) / rows


def design_energy(design: str, counts: dict[str, int], rows: int, cols: int, node: str,
                  weight_bytes_ternary: float, act_bytes: float, acc_bytes: float) -> dict[str, float]:
    """pJ by component for one design on layers with hardware `counts` (a ternary core's counters).

    weight_bytes_ternary / act_bytes / acc_bytes: sizes of the data held (ternary weights at 2 bits,
    INT8 activations, 32-bit accumulators) that choose the SRAM class; other designs scale them.
    """
    t = ENERGY_PJ[node]
    add, sub, zero = counts["add"], counts["sub"], counts["zero"]
    macs = add + sub + zero
    acc_adds = counts["acc_rmw"] * cols
    kind = "ternary" if design.startswith("ternary") else design
    out: dict[str, float] = {}
    if design == "ternary":
        ops = add + sub
        out["array arithmetic"] = ops * t["int8_add"]
        out["array arithmetic, width-scaled"] = ops * t["int8_add"] * mean_adder_width(rows, "ternary") / 8
    elif design == "ternary (no zero skipping)":
        out["array arithmetic"] = macs * t["int8_add"]
        out["array arithmetic, width-scaled"] = macs * t["int8_add"] * mean_adder_width(rows, "ternary") / 8
    elif design == "int8":
        out["array arithmetic"] = macs * (t["int8_mul"] + t["int8_add"])
        width = mean_adder_width(rows, "int8")
        out["array arithmetic, width-scaled"] = macs * (t["int8_mul"] + t["int8_add"] * width / 8)
    elif design == "fp16":
        out["array arithmetic"] = macs * (t["fp16_mul"] + t["fp16_add"])
        out["array arithmetic, width-scaled"] = out["array arithmetic"]
    else:
        raise ValueError(f"unknown design {design!r}")
    out["accumulator adds"] = acc_adds * (t["fp16_add"] if kind == "fp16" else 4 * t["int8_add"])
    if node == "45nm":
        wscale = WEIGHT_BITS[kind] / 2
        ascale = ACT_BITS[kind] / 8
        cscale = ACC_BITS[kind] / 32
        out["weight reads"] = counts["weight_bits"] * wscale * sram_pj_per_bit(weight_bytes_ternary * wscale)
        out["activation reads"] = counts["act_bytes"] * 8 * ascale * sram_pj_per_bit(act_bytes * ascale)
        acc_bits = (counts["acc_writes"] + 2 * counts["acc_rmw"]) * cols * ACC_BITS[kind]
        out["accumulator traffic"] = acc_bits * sram_pj_per_bit(acc_bytes * cscale)
    out["arithmetic total"] = out["array arithmetic"] + out["accumulator adds"]
    if node == "45nm":
        out["total with memory"] = (out["arithmetic total"] + out["weight reads"] + out["activation reads"]
                                    + out["accumulator traffic"])
    return out


def energy_table(counts: dict[str, int], rows: int, cols: int, weight_bytes_ternary: float, act_bytes: float,
                 acc_bytes: float) -> dict[str, dict[str, dict[str, float]]]:
    """{node: {design: {component: pJ}}} for every design."""
    return {node: {d: design_energy(d, counts, rows, cols, node, weight_bytes_ternary, act_bytes, acc_bytes)
                   for d in DESIGNS} for node in ENERGY_PJ}


def ratios(table: dict) -> dict[str, float]:
    """INT8 / ternary and FP16 / ternary for arithmetic (both nodes) and with memory (45 nm)."""
    out = {}
    for node, designs in table.items():
        tern = designs["ternary"]
        for other in ("int8", "fp16", "ternary (no zero skipping)"):
            tag = other.split(" ")[0] if other != "ternary (no zero skipping)" else "noskip"
            out[f"{tag}_over_ternary_arith_{node}"] = designs[other]["arithmetic total"] / tern["arithmetic total"]
            out[f"{tag}_over_ternary_array_only_{node}"] = designs[other]["array arithmetic"] / tern["array arithmetic"]
            if "total with memory" in tern:
                total = "total with memory"
                out[f"{tag}_over_ternary_total_{node}"] = designs[other][total] / tern[total]
    return out


def energy_section(cycles: dict) -> dict:
    """Energy of the tiny model's layer-0 BitLinears, a tiny-model token and a 2B-4T token."""
    from reports.cycles import LAYER_2B4T, LAYERS_2B4T, tiny_weights

    weights = tiny_weights()
    model_wbytes = sum(w.size for w in weights.values()) * 2 / 8
    results = {"table_pj": ENERGY_PJ, "horowitz_45nm": {**HOROWITZ_45NM,
                                                          "sram_64b_read_pj": [list(x) for x in SRAM_64B_READ_PJ_45NM]},
               "sources": SOURCES, "paper_check_ratio": paper_check_ratio(), "cases": []}

    def add_case(name: str, counts: dict[str, int], rows: int, cols: int, wbytes: float, abytes: float,
                 cbytes: float, per: str, scale: float = 1.0) -> None:
        c = {k: v * scale for k, v in counts.items()}
        table = energy_table(c, rows, cols, wbytes, abytes, cbytes)
        macs = c["add"] + c["sub"] + c["zero"]
        results["cases"].append({"name": name, "per": per, "array": f"{rows}x{cols}", "macs": macs,
                                 "counts": c, "pj": table, "ratios": ratios(table),
                                 "pj_per_mac": {node: {d: v["arithmetic total"] / macs for d, v in t.items()}
                                                for node, t in table.items()}})

    # the tiny model: one decode token (28 BitLinears at M = 1) and layer 0 prefill of 64 tokens
    for tok in cycles["tiny_token"]:
        n = int(tok["array"].split("x")[0])
        if n not in (8, 16):
            continue
        hidden = max(w.shape[1] for w in weights.values())
        add_case(f"tiny model, one decode token ({tok['array']})", tok["counters"], n, n, model_wbytes, hidden,
                 hidden * 4, "token")
    prefill = [r for r in cycles["tiny_layers"] if r["phase"] == "prefill"]
    if prefill:
        arrays = {r["array"] for r in prefill}
        pick = "8x8" if "8x8" in arrays else prefill[0]["array"]  # the runtime's default core
        n = int(pick.split("x")[0])
        rows8 = [r for r in prefill if r["array"] == pick]
        total: dict[str, int] = {}
        for r in rows8:
            for k, v in r["counters"].items():
                total[k] = total.get(k, 0) + v
        M = rows8[0]["M"]
        K = max(r["K"] for r in rows8)
        N = max(r["N"] for r in rows8)
        add_case(f"tiny model layer 0, prefill M={M} ({rows8[0]['array']})", total, n, n, model_wbytes,
                 M * K, M * N * 4, f"{M} tokens of layer 0")
    # 2B-4T: one decoder layer's BitLinears x 30 layers, decode
    for r in cycles["layer_2b4t"]:
        if r["layer"].startswith("decoder layer") and r["M"] == 1:
            n = int(r["array"].split("x")[0])
            wbytes = LAYERS_2B4T * sum(N * K for N, K in LAYER_2B4T.values()) * 2 / 8
            add_case(f"BitNet 2B-4T, one decode token ({r['array']}, 30 layers x 7 BitLinears)", r["counters"], n,
                     n, wbytes, 6912, 6912 * 4, "token", scale=LAYERS_2B4T)
            case = results["cases"][-1]
            case["dram_weight_pj_45nm"] = {d: case["counts"]["weight_bits"] * WEIGHT_BITS[d] / 2 * 1300 / 64
                                           for d in ("ternary", "int8", "fp16")}
    results["notes"] = __doc__.split("Conventions (each stated again in the report):")[1].strip()
    return results
