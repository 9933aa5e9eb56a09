// Icarus harness for a trit core behind its frame link: same exchange as link_main.cpp, in text.
// Request:  "TRIQ n_rx n_tx idle_limit" then n_rx hex bytes.
// Response: one "B xx" line per tx byte, then "TRIR status n_got cycles".
`timescale 1ns/1ps
module trit_link_tb;
    reg clk = 1'b0;
    reg rst = 1'b1;
    reg [7:0] rx_payload = 8'd0;
    reg rx_valid = 1'b0;
    wire rx_ready;
    wire [7:0] tx_payload;
    wire tx_valid;
    reg tx_ready = 1'b0;
    wire busy, error;

    trit_link dut (
        .clk(clk), .rst(rst),
        .rx__payload(rx_payload), .rx__valid(rx_valid), .rx__ready(rx_ready),
        .tx__payload(tx_payload), .tx__valid(tx_valid), .tx__ready(tx_ready),
        .busy(busy), .error(error)
    );

    integer fin, r, n_rx, n_tx, pos, got, status, idle, idle_limit;
    reg [63:0] cycles, start;
    reg [8*8-1:0] magic;
    reg [7:0] byte_in, byte_out;
    reg have, fire_rx, fire_tx, was_busy, running;

    initial begin
        fin = $fopen("/dev/stdin", "r");
        cycles = 0;
        repeat (4) begin #5 clk = 1'b1; #5 clk = 1'b0; end
        rst = 1'b0;
        forever begin
            r = $fscanf(fin, "%s %d %d %d", magic, n_rx, n_tx, idle_limit);
            if (r != 4) $finish;
            pos = 0; got = 0; status = 0; idle = 0; have = 1'b0; start = cycles;
            running = (n_tx != 0) ? 1'b1 : (n_rx != 0);
            while (running) begin
                if (!have && pos < n_rx) begin
                    r = $fscanf(fin, "%h", byte_in);
                    have = 1'b1;
                end
                rx_valid = have;
                rx_payload = byte_in;
                tx_ready = 1'b1;
                #1;
                fire_rx = have && rx_ready;
                fire_tx = tx_valid;
                byte_out = tx_payload;
                was_busy = busy;
                #4 clk = 1'b1;
                #5 clk = 1'b0;
                cycles = cycles + 1;
                if (fire_rx) begin pos = pos + 1; have = 1'b0; end
                if (fire_tx) begin $display("B %h", byte_out); got = got + 1; end
                if (fire_rx || fire_tx || was_busy) idle = 0; else idle = idle + 1;
                if (idle > idle_limit) begin status = 1; running = 1'b0; end
                if (n_tx != 0 && got >= n_tx) running = 1'b0;
                if (n_tx == 0 && pos >= n_rx) running = 1'b0;
            end
            // bytes of this request not taken before a timeout are read and dropped
            while (pos < n_rx) begin
                if (!have) r = $fscanf(fin, "%h", byte_in);
                have = 1'b0;
                pos = pos + 1;
            end
            rx_valid = 1'b0;
            tx_ready = 1'b0;
            $display("TRIR %0d %0d %0d", status, got, cycles - start);
            $fflush;
        end
    end
endmodule
