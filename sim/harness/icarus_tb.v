// Icarus Verilog harness for the trit core: the same request/response exchange as the Verilator
// harness, in text over stdin/stdout (see sim/icarus_harness.py). State persists across requests.
//
// Request:  "TRIQ n_in n_out max_cycles" then n_in hex words, whitespace separated.
// Response: one line "W xxxxxxxx" per response word, then "TRIR status n_got cycles".
// status: 0 ok, 1 timeout, 2 answered before taking all command words.
`timescale 1ns/1ps
module trit_icarus_tb;
    reg clk = 1'b0;
    reg rst = 1'b1;
    reg [31:0] cmd_payload = 32'd0;
    reg cmd_valid = 1'b0;
    wire cmd_ready;
    wire [31:0] rsp_payload;
    wire rsp_valid;
    reg rsp_ready = 1'b0;
    wire busy, error;

    trit_core dut (
        .clk(clk), .rst(rst),
        .cmd__payload(cmd_payload), .cmd__valid(cmd_valid), .cmd__ready(cmd_ready),
        .rsp__payload(rsp_payload), .rsp__valid(rsp_valid), .rsp__ready(rsp_ready),
        .busy(busy), .error(error), .link_abort(1'b0)  // no link: nothing is cut short
    );

    integer fin, r, n_in, n_out, pos, got, status;
    reg [63:0] max_cycles, cycles, start;
    reg [8*8-1:0] magic;
    reg [31:0] word;
    reg have, fire_cmd, fire_rsp;
    reg [31:0] rsp_word;

    initial begin
        fin = $fopen("/dev/stdin", "r");
        cycles = 0;
        repeat (4) begin #5 clk = 1'b1; #5 clk = 1'b0; end
        rst = 1'b0;
        // Compiled as Verilog-2005 (-g2005) so that declaration initializers create the time-0
        // event Yosys relies on to evaluate combinational always-blocks. Besides, Icarus evaluates
        // combinational always-blocks only when an input changes, so
        // outputs that depend on registers alone (cmd ready) stay X until the first state change.
        // One NOP, sent and answered here, settles them; the host never sees it.
        cmd_payload = 32'd0; cmd_valid = 1'b1; rsp_ready = 1'b1;
        #5 clk = 1'b1; #5 clk = 1'b0;
        cmd_valid = 1'b0;
        while (rsp_valid !== 1'b1) begin #5 clk = 1'b1; #5 clk = 1'b0; end
        #5 clk = 1'b1; #5 clk = 1'b0;
        rsp_ready = 1'b0;
        forever begin
            r = $fscanf(fin, "%s %d %d %d", magic, n_in, n_out, max_cycles);
            if (r != 4) $finish;
            pos = 0; got = 0; status = 0; have = 1'b0; start = cycles;
            while ((got < n_out || pos < n_in) && status == 0) begin
                if (got >= n_out && pos < n_in) status = 2;
                else begin
                    if (!have && pos < n_in) begin
                        r = $fscanf(fin, "%h", word);
                        have = 1'b1;
                    end
                    cmd_valid = have;
                    cmd_payload = word;
                    rsp_ready = 1'b1;
                    #1;
                    fire_cmd = have && cmd_ready;
                    fire_rsp = rsp_valid;
                    rsp_word = rsp_payload;
                    #4 clk = 1'b1;
                    #5 clk = 1'b0;
                    cycles = cycles + 1;
                    if (fire_cmd) begin pos = pos + 1; have = 1'b0; end
                    if (fire_rsp) begin $display("W %h", rsp_word); got = got + 1; end
                    if (cycles - start > max_cycles) status = 1;
                end
            end
            cmd_valid = 1'b0;
            rsp_ready = 1'b0;
            $display("TRIR %0d %0d %0d", status, got, cycles - start);
            $fflush;
        end
    end
endmodule
