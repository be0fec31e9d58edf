; banner.asm - the "banner" test guest: a boot sector that paints a fixed screen
; (palette stripe, solid blue, white "KVM-VDI TEST GUEST" on row 12) and then idles
; with interrupts on, so it costs ~1 % of a core under KVM.
; Build: nasm -f bin -o banner.bin banner.asm   (guests.py pads it to a 1 MiB disk)

bits 16
org 0x7c00

ATTR        equ 0x1f                ; white on blue
TITLE_LEN   equ 18

start:
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7c00
    sti
    cld
    mov bl, ATTR
    call paint
    mov si, title
    mov di, (12*80 + (80 - TITLE_LEN) / 2) * 2
    call puts
idle:
    sti
    hlt
    jmp idle

%include "screen.inc"

title: db "KVM-VDI TEST GUEST", 0

times 510 - ($ - $$) db 0
dw 0xaa55
