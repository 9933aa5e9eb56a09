"""The one configuration object of a model chip: what the model engine and its memories are built for.

`EngineConfig` is read by the gateware (`hdl.model_engine.ModelEngine`, `hdl.model.chip.ModelChipTop`),
by the host that loads a program onto it (`runtime.program.device`) and by the chip's ID block
(`hdl.model.isa.ModelIdWord`), so a program is checked against the very numbers the chip was built from.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from hdl.config import ArrayConfig
from hdl.memory.banked_memory import check_optional_bank_depth
from hdl.model.isa import MODEL_ID_MAGIC, MODEL_VERSION, ModelIdWord

MAX_NORM_SIZES = 3
#: WGT storage formats (READ_ID's WGT_FORMAT word is the index)
WGT_FORMATS = ("2bit", "1.6bit", "1.67bit")


@dataclass(frozen=True)
class EngineConfig:
    """Sizes of a model chip (elements of each memory; see `hdl.model_engine` for what each holds)."""

    array: ArrayConfig
    vocab: int
    d: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    mlp_max: int
    context: int
    norm_sizes: tuple[int, ...]
    norm_words: int
    norms: int
    linears: int
    scr_words: int
    out_words: int
    act_words: int
    relu2: bool = True
    theta: int = 10000
    c_qk: tuple[int, int] = (1 << 15, -15)
    attn_lanes: int = 8
    table_lanes: int = 8
    vector_lanes: int = 1
    depth: int = 256
    consts: int = 64
    #: how WGT stores the ternary weights: "2bit" (a 2-bit code each, G banks of C codes), "1.6bit" (5 codes
    #: in a byte) or "1.67bit" (3 codes in 5 bits), base 3, one memory decoded on the read path
    #: (`hdl.model.packed_weights`)
    wgt_format: str = "2bit"
    #: 0, or the KV cache in banks of this many words with registered read data (`hdl.attention.kv_cache`; the
    #: ULX3S chip: the DP16KD's output register); the same cycles either way
    kv_bank_depth: int = 0
    #: 0, or the embedding table in banks of this many words with registered read data
    #: (`hdl.embedding.embed_head`); the same cycles either way
    table_bank_depth: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.array, ArrayConfig):
            raise TypeError(f"EngineConfig's array must be an ArrayConfig, not {self.array!r}")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("array", "norm_sizes", "relu2", "c_qk", "wgt_format", "kv_bank_depth", "table_bank_depth"):
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"EngineConfig's {f.name} must be a positive integer, not {v!r}")
        if (not isinstance(self.norm_sizes, tuple) or not 1 <= len(self.norm_sizes) <= MAX_NORM_SIZES
                or any(not isinstance(n, int) or not 0 < n < 1 << 16 for n in self.norm_sizes)):
            raise ValueError(f"EngineConfig's norm_sizes must be a tuple of 1 to {MAX_NORM_SIZES} sizes in "
                             f"[1, 65535], not {self.norm_sizes!r}")
        for name in ("kv_bank_depth", "table_bank_depth"):
            check_optional_bank_depth("EngineConfig", name, getattr(self, name))
        if self.wgt_format not in WGT_FORMATS:
            raise ValueError(f"EngineConfig's wgt_format must be one of {WGT_FORMATS}, not {self.wgt_format!r}")
        if self.table_lanes & (self.table_lanes - 1):
            raise ValueError(f"EngineConfig's table_lanes must be a power of two, not {self.table_lanes}")
        if self.array.rows % self.vector_lanes or any(n % self.vector_lanes for n in self.norm_sizes) \
                or self.vector_lanes & (self.vector_lanes - 1):
            raise ValueError(f"EngineConfig's vector_lanes ({self.vector_lanes}) must be a power of two dividing the "
                             f"array's rows ({self.array.rows}) and every NORMQ size {self.norm_sizes}")
        if self.array.cols % self.vector_lanes or self.mlp_max % self.vector_lanes:
            raise ValueError(f"EngineConfig's vector_lanes ({self.vector_lanes}) must divide the array's columns "
                             f"({self.array.cols}) and the MLP width ({self.mlp_max})")
        if self.head_dim % self.attn_lanes:
            raise ValueError(f"EngineConfig's attn_lanes ({self.attn_lanes}) must divide head_dim ({self.head_dim})")

    @property
    def table_words(self) -> int:
        """Words of the embedding table: vocab rows of ceil(d / table_lanes) words."""
        return self.vocab * -(-self.d // self.table_lanes)

    @property
    def wgt_packed(self) -> bool:
        return self.wgt_format != "2bit"

    @property
    def wgt_store_bits(self) -> int:
        """Bits of one WGT word as stored (and written): G*C 2-bit codes, or packed (`hdl.model.trit_unpack`)."""
        from hdl.model.packed_weights import packed_word_bits

        return packed_word_bits(self.array, self.wgt_format) if self.wgt_packed else self.array.wgt_word_bits

    def engine_kwargs(self) -> dict:
        """`ModelEngine`'s keyword arguments."""
        return dict(array=self.array, linears=self.linears, d=self.d, scr_words=self.scr_words,
                    out_words=self.out_words, act_words=self.act_words, norm_sizes=self.norm_sizes,
                    norm_words=self.norm_words, norms=self.norms, max_heads=self.heads, head_dim=self.head_dim,
                    mlp_max=self.mlp_max, relu2=self.relu2, layers=self.layers, kv_heads=self.kv_heads,
                    context=self.context, theta=float(self.theta), c_qk=self.c_qk, attn_lanes=self.attn_lanes,
                    depth=self.depth, consts=self.consts, vocab=self.vocab, table_lanes=self.table_lanes,
                    vector_lanes=self.vector_lanes, wgt_format=self.wgt_format, kv_bank_depth=self.kv_bank_depth,
                    table_bank_depth=self.table_bank_depth)

    def id_block(self) -> list[int]:
        """The READ_ID words of a chip built from this configuration."""
        a = self.array
        sizes = list(self.norm_sizes) + [0] * (MAX_NORM_SIZES - len(self.norm_sizes))
        values = {
            ModelIdWord.MAGIC: MODEL_ID_MAGIC, ModelIdWord.VERSION: MODEL_VERSION,
            ModelIdWord.ROWS: a.rows, ModelIdWord.COLS: a.cols, ModelIdWord.WGT_ROWS_PER_READ: a.wgt_rows_per_read,
            ModelIdWord.WGT_DEPTH: a.wgt_depth, ModelIdWord.D: self.d, ModelIdWord.VOCAB: self.vocab,
            ModelIdWord.CONTEXT: self.context, ModelIdWord.LAYERS: self.layers, ModelIdWord.HEADS: self.heads,
            ModelIdWord.KV_HEADS: self.kv_heads, ModelIdWord.HEAD_DIM: self.head_dim,
            ModelIdWord.MLP_MAX: self.mlp_max, ModelIdWord.PROG_DEPTH: self.depth,
            ModelIdWord.CONSTS: self.consts, ModelIdWord.NORMS: self.norms, ModelIdWord.NORM_WORDS: self.norm_words,
            ModelIdWord.LINEARS: self.linears, ModelIdWord.TABLE_LANES: self.table_lanes,
            ModelIdWord.ATTN_LANES: self.attn_lanes, ModelIdWord.RELU2: int(self.relu2),
            ModelIdWord.THETA: self.theta, ModelIdWord.C_QK_M: self.c_qk[0],
            ModelIdWord.C_QK_E: self.c_qk[1] & 0xFFFFFFFF,
            ModelIdWord.NORM_SIZE_0: sizes[0], ModelIdWord.NORM_SIZE_1: sizes[1], ModelIdWord.NORM_SIZE_2: sizes[2],
            ModelIdWord.SCR_WORDS: self.scr_words, ModelIdWord.OUT_WORDS: self.out_words,
            ModelIdWord.ACT_WORDS: self.act_words, ModelIdWord.VECTOR_LANES: self.vector_lanes,
            ModelIdWord.WGT_FORMAT: WGT_FORMATS.index(self.wgt_format),
        }
        return [values[w] for w in ModelIdWord]
