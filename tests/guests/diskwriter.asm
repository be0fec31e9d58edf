; diskwriter.asm - the "diskwriter" test guest: counts its own boots on its disk.
;
; At every boot it reads sector COUNTER_LBA through the BIOS (extended int 13h,
; which SeaBIOS implements for virtio disks too), increments the little-endian
; 32-bit counter that follows the magic "KVDI", writes the sector back and only
; then paints the screen: green with "KVM-VDI BOOT COUNT <n>" when the write
; succeeded, red with "KVM-VDI DISK ERROR" when it did not. A test therefore knows
; the write is done as soon as the screen turns green.
; With -DPOWEROFF it then powers the machine off through the ACPI PM1a control
; register of QEMU's pc machine (port 0x604, SLP_EN with S5), which libvirt sees
; as a guest-initiated shutdown.

bits 16
org 0x7c00

COUNTER_LBA equ 8
BUFFER      equ 0x8000
MAGIC       equ 'KVDI'
OK_ATTR     equ 0x2f                ; white on green
ERR_ATTR    equ 0x4f                ; white on red

start:
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7c00
    sti
    cld
    mov [drive], dl                 ; the BIOS passes the boot drive in DL

    mov ah, 0x42                    ; extended read
    call disk_io
    jc error
    cmp dword [BUFFER], MAGIC
    je .counted
    mov dword [BUFFER], MAGIC       ; first boot: a fresh counter
    mov dword [BUFFER + 4], 0
.counted:
    inc dword [BUFFER + 4]
    mov ah, 0x43                    ; extended write (AL=0: no verify)
    call disk_io
    jc error

    mov bl, OK_ATTR
    call paint
    mov si, title
    mov di, (12*80 + 28) * 2
    call puts
    mov eax, [BUFFER + 4]
    call putdec
%ifdef POWEROFF
    mov dx, 0x604                   ; PIIX4 PM1a_CNT (SeaBIOS maps PM I/O at 0x600)
    mov ax, 0x2000                  ; SLP_EN, SLP_TYP=0 (\_S5 on QEMU's pc machine)
    out dx, ax
%endif
idle:
    sti
    hlt
    jmp idle

error:
    mov bl, ERR_ATTR
    call paint
    mov si, errmsg
    mov di, (12*80 + 31) * 2
    call puts
    jmp idle

; disk_io: extended int 13h call AH (0x42 read / 0x43 write) of one sector at
; COUNTER_LBA to/from BUFFER. Returns CF set on error.
disk_io:
    xor al, al
    mov dl, [drive]
    mov si, dap
    int 0x13
    ret

; putdec: print EAX in decimal at text offset DI (ES = 0xB800) with attribute BL.
putdec:
    mov ecx, 10
    xor si, si                      ; digit count
.divide:
    xor edx, edx
    div ecx
    push dx
    inc si
    test eax, eax
    jnz .divide
.emit:
    pop ax
    add al, '0'
    mov ah, bl
    stosw
    dec si
    jnz .emit
    ret

%include "screen.inc"

dap:                                ; disk address packet for extended int 13h
    db 16, 0
    dw 1                            ; sectors
    dw BUFFER, 0                    ; buffer offset, segment
    dq COUNTER_LBA
drive: db 0
title: db "KVM-VDI BOOT COUNT ", 0
errmsg: db "KVM-VDI DISK ERROR", 0

times 510 - ($ - $$) db 0
dw 0xaa55
