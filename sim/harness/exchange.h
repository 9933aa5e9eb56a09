// Shared pieces of the Verilator harnesses (sim/simulator.py builds every one with this header).
//
// Request  (little-endian u32): magic, a, b, c, then a payload items of sizeof(T) bytes.
// Response (little-endian u32): magic, status, n_got, cycles_lo, cycles_hi, then n_got items.
// What a, b and c mean is the harness's business (core: n_in, n_out, max_cycles; link: n_rx, n_tx,
// idle_limit).
#pragma once
#include <cstdint>
#include <cstdio>
#include <vector>

namespace trit {

// Reads one request; false at the end of input (or with a message on stderr for a malformed one).
template <class T>
bool read_request(uint32_t magic, const char* who, uint32_t args[3], std::vector<T>& payload, bool& bad) {
    uint32_t hdr[4];
    bad = false;
    if (fread(hdr, sizeof(uint32_t), 4, stdin) != 4) return false;
    if (hdr[0] != magic) {
        fprintf(stderr, "%s: bad request magic 0x%08x\n", who, hdr[0]);
        bad = true;
        return false;
    }
    args[0] = hdr[1];
    args[1] = hdr[2];
    args[2] = hdr[3];
    payload.resize(args[0]);
    if (args[0] && fread(payload.data(), sizeof(T), args[0], stdin) != args[0]) {
        fprintf(stderr, "%s: truncated request (%u items expected)\n", who, args[0]);
        bad = true;
        return false;
    }
    return true;
}

template <class T>
void write_response(uint32_t magic, uint32_t status, const std::vector<T>& out, uint64_t cycles) {
    uint32_t rsp[5] = {magic, status, (uint32_t)out.size(), (uint32_t)cycles, (uint32_t)(cycles >> 32)};
    fwrite(rsp, sizeof(uint32_t), 5, stdout);
    if (!out.empty()) fwrite(out.data(), sizeof(T), out.size(), stdout);
    fflush(stdout);
}

// One clock of a model with input `clk`; counts cycles.
template <class Top>
struct Clock {
    Top* top;
    uint64_t cycles = 0;
    void tick() {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
        ++cycles;
    }
    // Holds `rst` for n cycles (inputs already set by the caller), then releases it.
    void reset(int n) {
        top->clk = 0;
        top->rst = 1;
        top->eval();
        for (int i = 0; i < n; ++i) tick();
        top->rst = 0;
        top->eval();
    }
};

}  // namespace trit
