; padtest.s: the project's Game Boy test ROM (DMG, 32 KiB, no mapper), assembled with sdasgb (sdcc).
; Every frame, in vertical blank, it reads the joypad and
;   - stores the pad byte at 0xC000 in mGBA's C.GB_KEY bit order (bit 0 A, 1 B, 2 Select, 3 Start,
;     4 Right, 5 Left, 6 Up, 7 Down; 1 = pressed) and counts the reads in 0xC001 (wraps at 256);
;   - draws that byte as 8 boxes (2x2 tiles, black = pressed) on tile row 4, left to right bit 0..7,
;     and the read count as 8 boxes on tile row 10, so every screenshot shows what the ROM read.
; The header has no Nintendo logo: the headless test host loads it with GBCoreCreate(), which does
; not check one. Build: tests/emulator/rom/build.sh.

PAD     = 0xC000
COUNT   = 0xC001
P1      = 0x00          ; ldh offsets into 0xFF00
LCDC    = 0x40
LY      = 0x44
BGP     = 0x47
IE      = 0xFF
ROW_PAD = 0x9880        ; BG map, tile row 4
ROW_CNT = 0x9940        ; BG map, tile row 10

        .area   _HEADER (ABS)

        .org    0x0040          ; vertical blank interrupt: just wake the main loop from halt
        reti

        .org    0x0100          ; entry point
        nop
        jp      start

        ; 0x0134-0x014F: title, cartridge type (ROM only), sizes and checksums, written by makebin

        .org    0x0150
start:
        di
        ld      sp, #0xFFFE
wait_vblank:                    ; the LCD may only be switched off in vertical blank
        ldh     a, (LY)
        cp      #144
        jr      c, wait_vblank
        xor     a
        ldh     (LCDC), a
        ld      hl, #0x8000     ; tile 0: colour 0 (white), tile 1: colour 3 (black)
        ld      b, #16
tile0:  ld      (hl+), a
        dec     b
        jr      nz, tile0
        ld      a, #0xFF
        ld      b, #16
tile1:  ld      (hl+), a
        dec     b
        jr      nz, tile1
        ld      hl, #0x9800     ; clear the 32x32 BG map to tile 0
        ld      bc, #0x0400
clear:  xor     a
        ld      (hl+), a
        dec     bc
        ld      a, b
        or      c
        jr      nz, clear
        xor     a
        ld      (PAD), a
        ld      (COUNT), a
        ld      a, #0xE4        ; palette: colour n -> shade n
        ldh     (BGP), a
        ld      a, #0x91        ; LCD on, BG on, tiles at 0x8000, map at 0x9800
        ldh     (LCDC), a
        ld      a, #0x01        ; vertical blank interrupt only
        ldh     (IE), a
        ei

loop:
        halt
        nop
        ld      a, #0x20        ; select the d-pad (P14 low)
        ldh     (P1), a
        ldh     a, (P1)
        ldh     a, (P1)         ; read twice: the lines settle
        cpl
        and     #0x0F
        swap    a
        ld      b, a            ; Down Up Left Right in bits 7..4
        ld      a, #0x10        ; select the buttons (P15 low)
        ldh     (P1), a
        ldh     a, (P1)
        ldh     a, (P1)
        cpl
        and     #0x0F           ; Start Select B A in bits 3..0
        or      b
        ld      (PAD), a
        ld      a, #0x30        ; deselect both
        ldh     (P1), a
        ld      a, (COUNT)
        inc     a
        ld      (COUNT), a

        ld      a, (PAD)
        ld      hl, #ROW_PAD
        call    draw_byte
        ld      a, (COUNT)
        ld      hl, #ROW_CNT
        call    draw_byte
        jr      loop

; draw_byte: A = byte, HL = BG map address of the row; bit i becomes a 2x2 box at columns 2+2i.
draw_byte:
        ld      c, a
        ld      de, #2
        add     hl, de          ; start at column 2
        ld      b, #8
next_bit:
        xor     a
        srl     c
        jr      nc, put
        inc     a               ; tile 1 if the bit is set
put:    ld      (hl+), a        ; top-left, top-right
        ld      (hl-), a
        ld      de, #32
        add     hl, de
        ld      (hl+), a        ; bottom-left, bottom-right
        ld      (hl), a
        ld      de, #-32 + 1
        add     hl, de          ; back to the top row, next column pair
        dec     b
        jr      nz, next_bit
        ret
