#!/usr/bin/env bash
# Install the Debian 12 packages that the dashboard, the test suite and the thin
# client need. Idempotent: when every package is already installed it touches
# neither the network nor apt, so repeated runs take a few milliseconds.
set -euo pipefail

PACKAGES=(
    # hypervisor side: qemu, libvirt and the headers libvirt-python builds against
    qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
    # Python venv and native extensions; Tk for the thin-client launcher's window
    python3-venv python3-dev gcc python3-tk
    # real services started by the test suite
    openssh-server mariadb-server slapd ldap-utils
    # a real Active Directory domain controller for the AD login tests
    samba samba-ad-provision samba-dsdb-modules
    # browser tests and the thin client under a virtual X server
    chromium chromium-driver virt-viewer xvfb imagemagick x11-apps x11-xserver-utils xdotool
    # subreaper for libvirtd, the guest-image assembler, small network tools
    tini nasm netcat-openbsd iproute2
    # front-end assets
    nodejs npm
    sudo
)

# Second-wave services, installed without their recommendations (as measured on
# Debian 12: the recommendations add daemons and desktop packages nothing uses).
PACKAGES_NO_RECOMMENDS=(
    # scale-out: a Galera cluster (rsync for state transfers), Redis, HAProxy
    galera-4 mariadb-backup rsync socat redis-server haproxy
    # metrics and the network tools of the console-security tests
    prometheus nftables tcpdump
    # RDP failover: a real RDP server with a tiny session, and the FreeRDP client
    xrdp xorgxrdp freerdp2-x11 xterm twm
    # UEFI, Secure Boot and TPM desktops; EFI test programs on FAT images
    ovmf swtpm swtpm-tools sbsigntool mtools dosfstools binutils
    # the DHCP export is checked by the ISC server's own syntax check
    isc-dhcp-server
)

# Run privileged commands directly as root, through sudo otherwise.
if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
else
    as_root() { sudo "$@"; }
fi

# One dpkg-query call for the whole list keeps the fast path fast.
declare -A installed=()
while read -r pkg status; do
    [ "$status" = installed ] && installed[$pkg]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" "${PACKAGES_NO_RECOMMENDS[@]}" 2>/dev/null || true)

missing_plain=()
for pkg in "${PACKAGES_NO_RECOMMENDS[@]}"; do
    [ -n "${installed[$pkg]:-}" ] || missing_plain+=("$pkg")
done

missing=()
for pkg in "${PACKAGES[@]}"; do
    [ -n "${installed[$pkg]:-}" ] && continue
    # NodeSource's nodejs ships npm itself and conflicts with Debian's npm package:
    # a working npm command satisfies the requirement whichever package provides it.
    if [ "$pkg" = npm ] && command -v npm >/dev/null 2>&1; then
        continue
    fi
    missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ] && [ ${#missing_plain[@]} -eq 0 ]; then
    exit 0
fi

echo "setup-system: installing ${missing[*]} ${missing_plain[*]}" >&2
# slapd must not build a default database at install time: the tests configure
# their own instances from slapd.conf files.
echo "slapd slapd/no_configuration boolean true" | as_root debconf-set-selections
as_root apt-get update -q
if [ ${#missing[@]} -gt 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
if [ ${#missing_plain[@]} -gt 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing_plain[@]}"
fi
