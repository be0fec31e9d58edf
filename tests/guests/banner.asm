; banner.asm - the "banner" test guest: a boot sector that paints a fixed screen
; (palette stripe, solid blue, white "KVM-VDI TEST GUEST" on row 12) and then idles
; with interrupts on, so it costs ~1 % of a core under KVM.
; With -DACPI it powers itself off (ACPI S5) when the ACPI power button is pressed
; (libvirt's "shutdown"), as an operating system does: polled, no SCI handler.
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
%ifdef ACPI
    mov dx, 0x602                   ; PIIX4 PM1a_EN (SeaBIOS maps PM I/O at 0x600)
    mov ax, 0x0100                  ; PWRBTN_EN: the power button sets PWRBTN_STS
    out dx, ax
%endif
idle:
    sti
    hlt
%ifdef ACPI
    mov dx, 0x600                   ; PM1a_STS, looked at after every timer tick
    in ax, dx
    test ax, 0x0100                 ; PWRBTN_STS: the ACPI power button was pressed
    jz idle
    mov dx, 0x604                   ; PM1a_CNT: SLP_EN with S5, as diskwriter-poweroff
    mov ax, 0x2000
    out dx, ax
%endif
    jmp idle

%include "screen.inc"

title: db "KVM-VDI TEST GUEST", 0

times 510 - ($ - $$) db 0
dw 0xaa55
