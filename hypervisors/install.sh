#!/bin/bash
# KVM-VDI: prepare a Debian 12 machine as a hypervisor the dashboard can manage.
#
#   install.sh [install] [options]   set everything up (safe to run again: it only fixes what differs)
#   install.sh check [options]       verify everything, print what is missing, exit 1 if anything is
#   install.sh firewall [options]    only (re)apply the --spice-firewall rule
#   install.sh user [options]        only the service user, its directories and the dashboard's key,
#                                    for a hypervisor whose libvirt is managed already (libvirtd's
#                                    configuration, its sockets and qemu.conf are left as they are)
#   install.sh narrow [options]      only (re)write libvirt's access control for the service user
#                                    (what --narrow adds to install)
#
# Options (the same for both):
#   --user NAME              service account the dashboard logs in as (default: vdi)
#   --home DIR               its home directory (default: /var/lib/kvm-vdi)
#   --images-dir DIR         golden images, initial copies, VDI overlays (default: /var/lib/kvm-vdi/images)
#   --volatile-dir DIR       throw-away overlays of volatile desktops (default: /var/lib/kvm-vdi/volatile)
#   --iso-dir DIR            installation media (default: /var/lib/kvm-vdi/iso)
#   --dashboard-key 'KEY'    the dashboard's public key ("ssh-ed25519 AAAA..."), shown on its
#                            hypervisor page; authorized for the service user
#   --dashboard-from ADDR    accept that key only from this address/pattern (sshd "from=")
#   --console-address ADDR   the console network address SPICE listens on by default (qemu.conf
#                            spice_listen); give the dashboard's hypervisor record the same one
#   --spice-ports MIN-MAX    the ports desktops' SPICE displays use (default 5900-6899)
#   --spice-firewall ADDRS   admit the SPICE ports only from these dashboard addresses (comma
#                            list, IPv4/IPv6); an nftables table of its own, kept across reboots
#   --narrow                 turn on libvirt's access control (polkit): the service user may make
#                            only the calls the dashboard needs, on domains only (no networks,
#                            storage pools, secrets, host devices); other group members read only
#   --domain-prefix PREFIX   with --narrow: only domains whose names start with PREFIX (besides the
#                            dashboard's own kvmvdi-trial-* probes); name the desktops accordingly
#   --no-packages            do not apt-get install anything (check still requires the programs)
#   --no-restart             do not restart libvirtd after changing its configuration
#
# See README.md next to this script for what each step does and why.
set -euo pipefail

ACTION=install
SERVICE_USER=vdi
HOME_DIR=/var/lib/kvm-vdi
IMAGES_DIR=/var/lib/kvm-vdi/images
VOLATILE_DIR=/var/lib/kvm-vdi/volatile
ISO_DIR=/var/lib/kvm-vdi/iso
DASHBOARD_KEY=""
DASHBOARD_FROM=""
CONSOLE_ADDRESS=""
SPICE_PORTS=5900-6899
SPICE_FIREWALL=""
INSTALL_PACKAGES=1
RESTART=1
NARROW=0
DOMAIN_PREFIX=""

LIBVIRTD_CONF=/etc/libvirt/libvirtd.conf
QEMU_CONF=/etc/libvirt/qemu.conf
SOCKET_DROPIN_DIR=/etc/systemd/system/libvirtd.socket.d
SOCKET_DROPIN=$SOCKET_DROPIN_DIR/kvm-vdi.conf
# Narrow mode: libvirtd asks polkit before every API call; this file says what the service user may do.
POLKIT_RULES=/etc/polkit-1/rules.d/40-kvm-vdi-libvirt.rules
# The throw-away domains the dashboard starts to find out what a host can run (app/hyper/trials.py).
TRIAL_PREFIX=kvmvdi-trial-
KEY_COMMENT=kvm-vdi-dashboard
# Where qemu finds SPICE's TLS files: "current" points at the generation the dashboard issued last.
# AppArmor's libvirt profile lets qemu read /etc/pki/libvirt-spice, so it stays under it.
SPICE_TLS_DIR=/etc/pki/libvirt-spice
FIREWALL_TABLE=kvm_vdi_spice
FIREWALL_FILE=/etc/kvm-vdi/spice-firewall.nft
NFTABLES_CONF=/etc/nftables.conf
# ovmf: UEFI firmware (with Secure Boot); swtpm + swtpm-tools: emulated TPM 2.0 (Windows 11 desktops).
PACKAGES=(qemu-system-x86 qemu-utils libvirt-daemon-system openssh-server openssl ovmf swtpm swtpm-tools)

usage() {
    sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    echo "install.sh: $*" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        install | check | firewall | user | narrow) ACTION=$1 ;;
        --user) SERVICE_USER=${2:?--user needs a name}; shift ;;
        --home) HOME_DIR=${2:?--home needs a directory}; shift ;;
        --images-dir) IMAGES_DIR=${2:?--images-dir needs a directory}; shift ;;
        --volatile-dir) VOLATILE_DIR=${2:?--volatile-dir needs a directory}; shift ;;
        --iso-dir) ISO_DIR=${2:?--iso-dir needs a directory}; shift ;;
        --dashboard-key) DASHBOARD_KEY=${2:?--dashboard-key needs a public key}; shift ;;
        --dashboard-from) DASHBOARD_FROM=${2:?--dashboard-from needs an address}; shift ;;
        --console-address) CONSOLE_ADDRESS=${2:?--console-address needs an address}; shift ;;
        --spice-ports) SPICE_PORTS=${2:?--spice-ports needs MIN-MAX}; shift ;;
        --spice-firewall) SPICE_FIREWALL=${2:?--spice-firewall needs addresses}; shift ;;
        --narrow) NARROW=1 ;;
        --domain-prefix) DOMAIN_PREFIX=${2:?--domain-prefix needs a prefix}; shift ;;
        --no-packages) INSTALL_PACKAGES=0 ;;
        --no-restart) RESTART=0 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

[ "$(id -u)" -eq 0 ] || die "run as root"
[ "$ACTION" != narrow ] || NARROW=1
if [ -n "$DOMAIN_PREFIX" ]; then
    [ "$NARROW" -eq 1 ] || die "--domain-prefix needs --narrow"
    # Written into a JavaScript string: libvirt's own name characters only.
    [[ $DOMAIN_PREFIX =~ ^[A-Za-z0-9_.-]{1,32}$ ]] || die "--domain-prefix: letters, digits, '_', '.', '-' only: $DOMAIN_PREFIX"
fi
[[ $SERVICE_USER =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "--user: not a valid user name: $SERVICE_USER"
for dir in "$HOME_DIR" "$IMAGES_DIR" "$VOLATILE_DIR" "$ISO_DIR"; do
    [[ $dir == /* && $dir != *..* ]] || die "directories must be absolute paths without '..': $dir"
done
if [ -n "$DASHBOARD_FROM" ] && [[ ! $DASHBOARD_FROM =~ ^[][A-Za-z0-9.:/*?!,-]+$ ]]; then
    die "--dashboard-from: not an address or pattern: $DASHBOARD_FROM"
fi

if [ -n "$CONSOLE_ADDRESS" ] && [[ ! $CONSOLE_ADDRESS =~ ^[A-Za-z0-9.:-]+$ ]]; then
    die "--console-address: not an address: $CONSOLE_ADDRESS"
fi
[[ $SPICE_PORTS =~ ^([0-9]{1,5})-([0-9]{1,5})$ ]] || die "--spice-ports: not MIN-MAX: $SPICE_PORTS"
SPICE_PORT_MIN=${BASH_REMATCH[1]}
SPICE_PORT_MAX=${BASH_REMATCH[2]}
((SPICE_PORT_MIN >= 1024 && SPICE_PORT_MIN <= SPICE_PORT_MAX && SPICE_PORT_MAX <= 65535)) ||
    die "--spice-ports: need 1024 <= MIN <= MAX <= 65535: $SPICE_PORTS"
FIREWALL_V4=()
FIREWALL_V6=()
if [ -n "$SPICE_FIREWALL" ]; then
    IFS=, read -r -a firewall_addresses <<<"$SPICE_FIREWALL"
    for address in "${firewall_addresses[@]}"; do
        if [[ $address =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?$ ]]; then
            FIREWALL_V4+=("$address")
        elif [[ $address =~ ^[0-9A-Fa-f:]+(/[0-9]{1,3})?$ && $address == *:* ]]; then
            FIREWALL_V6+=("$address")
        else
            die "--spice-firewall: not an IPv4 or IPv6 address: $address"
        fi
    done
fi

# The qemu processes run as this user (qemu.conf "user", Debian's default libvirt-qemu).
qemu_user() {
    local configured
    configured=$(sed -n 's/^[[:space:]]*user[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$QEMU_CONF" 2>/dev/null | tail -n1)
    echo "${configured:-libvirt-qemu}"
}

# The effective value of KEY in a libvirt-style config file (last uncommented assignment).
conf_value() {
    local file=$1 key=$2
    sed -n "s/^[[:space:]]*${key}[[:space:]]*=[[:space:]]*\"\{0,1\}\([^\"]*\)\"\{0,1\}[[:space:]]*\$/\1/p" "$file" 2>/dev/null |
        tail -n1
}

key_blob() {
    # The base64 part of an OpenSSH public key line, whatever options precede it.
    awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^(ssh-|ecdsa-|sk-)/) { print $(i + 1); exit } }' <<<"$1"
}

home_of() {
    getent passwd "$1" | cut -d: -f6
}

# --- install -----------------------------------------------------------------------------

CHANGES=0
LIBVIRT_CHANGED=0

changed() {
    echo "changed  $*"
    CHANGES=$((CHANGES + 1))
}

unchanged() {
    echo "ok       $*"
}

check_os() {
    local id="" version=""
    if [ -r /etc/os-release ]; then
        # shellcheck source=/dev/null
        id=$(. /etc/os-release && echo "${ID:-}")
        # shellcheck source=/dev/null
        version=$(. /etc/os-release && echo "${VERSION_ID:-}")
    fi
    if [ "$id" != debian ] || [ "$version" != 12 ]; then
        echo "warning  this script is written for Debian 12; found ${id:-unknown} ${version:-}" >&2
    fi
}

install_packages() {
    local missing=()
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        unchanged "packages ${PACKAGES[*]}"
        return
    fi
    if [ "$INSTALL_PACKAGES" -eq 0 ]; then
        echo "warning  not installing missing packages (--no-packages): ${missing[*]}" >&2
        return
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    changed "installed ${missing[*]}"
}

ensure_user() {
    local groups=() group
    for group in libvirt kvm; do
        getent group "$group" >/dev/null || die "group $group does not exist: is libvirt-daemon-system installed?"
        groups+=("$group")
    done
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        mkdir -p "$(dirname "$HOME_DIR")"
        useradd --system --user-group --home-dir "$HOME_DIR" --create-home --shell /bin/sh \
            --groups "$(IFS=,; echo "${groups[*]}")" --comment "KVM-VDI dashboard service account" "$SERVICE_USER"
        changed "created service user $SERVICE_USER (groups ${groups[*]})"
    else
        for group in "${groups[@]}"; do
            if ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx "$group"; then
                usermod --append --groups "$group" "$SERVICE_USER"
                changed "added $SERVICE_USER to group $group"
            fi
        done
        local shell
        shell=$(getent passwd "$SERVICE_USER" | cut -d: -f7)
        if [[ $shell == */nologin || $shell == */false || -z $shell ]]; then
            usermod --shell /bin/sh "$SERVICE_USER"
            changed "gave $SERVICE_USER a shell (libvirt's ssh transport and the dashboard's commands need one)"
        fi
        [ "$(home_of "$SERVICE_USER")" = "$HOME_DIR" ] ||
            echo "warning  $SERVICE_USER's home is $(home_of "$SERVICE_USER"), not $HOME_DIR: keeping it" >&2
        unchanged "service user $SERVICE_USER"
    fi
    # A locked password ("!") makes sshd refuse even key logins when it runs without PAM.
    # "*" = no password can ever match, but the account may log in with its key.
    if [ "$(getent shadow "$SERVICE_USER" | cut -d: -f2 | cut -c1)" = "!" ]; then
        usermod -p '*' "$SERVICE_USER"
        changed "unlocked $SERVICE_USER for key-only logins (no password is set)"
    fi
}

ensure_dir() {
    local path=$1 owner=$2 group=$3 mode=$4 what=$5
    if [ ! -d "$path" ]; then
        install -d -o "$owner" -g "$group" -m "$mode" "$path"
        changed "created $what $path ($owner:$group $mode)"
        return
    fi
    local current
    current=$(stat -c '%U:%G %a' "$path")
    if [ "$current" != "$owner:$group ${mode#0}" ]; then
        chown "$owner:$group" "$path"
        chmod "$mode" "$path"
        changed "$what $path: $current -> $owner:$group ${mode#0}"
    else
        unchanged "$what $path"
    fi
}

ensure_dirs() {
    local home
    home=$(home_of "$SERVICE_USER")
    # qemu (group kvm) must traverse the home to reach images below it; nothing more.
    ensure_dir "$home" "$SERVICE_USER" kvm 0750 "home"
    ensure_dir "$IMAGES_DIR" "$SERVICE_USER" kvm 0750 "images directory"
    ensure_dir "$VOLATILE_DIR" "$SERVICE_USER" kvm 0750 "volatile directory"
    ensure_dir "$ISO_DIR" "$SERVICE_USER" kvm 0750 "ISO directory"
}

authorize_dashboard_key() {
    [ -n "$DASHBOARD_KEY" ] || {
        echo "note     no --dashboard-key given: authorize the dashboard's key later with --dashboard-key"
        return
    }
    local fingerprint blob home ssh_dir keys options line
    fingerprint=$(ssh-keygen -l -f /dev/stdin <<<"$DASHBOARD_KEY" 2>/dev/null) ||
        die "--dashboard-key: not an SSH public key"
    blob=$(key_blob "$DASHBOARD_KEY")
    home=$(home_of "$SERVICE_USER")
    ssh_dir=$home/.ssh
    keys=$ssh_dir/authorized_keys
    ensure_dir "$ssh_dir" "$SERVICE_USER" "$(id -gn "$SERVICE_USER")" 0700 "ssh directory"
    if [ ! -f "$keys" ]; then
        install -m 0600 -o "$SERVICE_USER" -g "$(id -gn "$SERVICE_USER")" /dev/null "$keys"
    fi
    if grep -qF -- "$blob" "$keys"; then
        unchanged "dashboard key authorized (${fingerprint})"
        return
    fi
    # restrict: no port/agent/X11 forwarding, no pty; the dashboard only runs commands.
    options=restrict
    [ -z "$DASHBOARD_FROM" ] || options="$options,from=\"$DASHBOARD_FROM\""
    line="$options $(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^(ssh-|ecdsa-|sk-)/) { print $i, $(i + 1); exit } }' \
        <<<"$DASHBOARD_KEY") $KEY_COMMENT"
    printf '%s\n' "$line" >>"$keys"
    chown "$SERVICE_USER:$(id -gn "$SERVICE_USER")" "$keys"
    chmod 0600 "$keys"
    changed "authorized the dashboard key for $SERVICE_USER (${fingerprint})"
}

# Set KEY = "VALUE" in a libvirt config file: replace an active line, else uncomment the
# documented default, else append. The first change keeps a copy of the original.
set_conf() {
    local file=$1 key=$2 value=$3 raw=${4:-}
    local line="$key = \"$value\""
    # Numbers and booleans of qemu.conf are written without quotes.
    [ -z "$raw" ] || line="$key = $value"
    if [ "$(conf_value "$file" "$key")" = "$value" ]; then
        unchanged "$file: $line"
        return
    fi
    write_conf_line "$file" "$key" "$line"
}

# Put LINE (an assignment of KEY) into a libvirt config file in place of KEY's active line(s).
write_conf_line() {
    local file=$1 key=$2 line=$3
    [ -f "$file.kvm-vdi.orig" ] || cp -p "$file" "$file.kvm-vdi.orig"
    local tmp
    tmp=$(mktemp "$file.XXXXXX")
    if grep -q "^[[:space:]]*${key}[[:space:]]*=" "$file"; then
        # Replace the active assignment(s) by one line of ours.
        awk -v key="$key" -v line="$line" '
            $0 ~ "^[[:space:]]*" key "[[:space:]]*=" { if (!done) print line; done = 1; next }
            { print }
        ' "$file" >"$tmp"
    else
        # Put ours right under the commented default, where admins look for it.
        awk -v key="$key" -v line="$line" '
            { print }
            !done && $0 ~ "^#[[:space:]]*" key "[[:space:]]*=" { print line; done = 1 }
            END { if (!done) print line }
        ' "$file" >"$tmp"
    fi
    chmod --reference="$file" "$tmp"
    chown --reference="$file" "$tmp"
    mv "$tmp" "$file"
    changed "$file: $line"
    LIBVIRT_CHANGED=1
}

configure_libvirtd() {
    [ -f "$LIBVIRTD_CONF" ] || die "$LIBVIRTD_CONF not found: is libvirt-daemon-system installed?"
    # Members of group libvirt (the service user) may use the read-write socket without
    # polkit; nobody else can open it.
    set_conf "$LIBVIRTD_CONF" unix_sock_group libvirt
    set_conf "$LIBVIRTD_CONF" unix_sock_rw_perms 0770
    set_conf "$LIBVIRTD_CONF" auth_unix_rw none
    # Debian starts libvirtd by socket activation, and then systemd, not libvirtd.conf,
    # decides the socket's owner and mode (the shipped unit says 0666). Without this
    # drop-in, auth_unix_rw = none would let every local user manage the VMs.
    if [ -e /lib/systemd/system/libvirtd.socket ] || [ -e /usr/lib/systemd/system/libvirtd.socket ]; then
        local wanted
        wanted=$'# Written by KVM-VDI install.sh: the read-write libvirt socket for group libvirt only.\n[Socket]\nSocketGroup=libvirt\nSocketMode=0660\n'
        if [ "$(cat "$SOCKET_DROPIN" 2>/dev/null)"$'\n' != "$wanted" ]; then
            mkdir -p "$SOCKET_DROPIN_DIR"
            printf '%s' "$wanted" >"$SOCKET_DROPIN"
            changed "$SOCKET_DROPIN (libvirt socket: group libvirt, mode 0660)"
            LIBVIRT_CHANGED=1
        else
            unchanged "$SOCKET_DROPIN"
        fi
    fi
}

# --- narrow mode: libvirt's access control -----------------------------------------------

ACCESS_DRIVERS_LINE='access_drivers = [ "polkit" ]'

access_control_on() {
    grep -Eq '^[[:space:]]*access_drivers[[:space:]]*=[[:space:]]*\[[[:space:]]*"polkit"[[:space:]]*\]' "$LIBVIRTD_CONF"
}

# The polkit rules: libvirtd asks, before each API call, whether the calling user may do
# org.libvirt.api.OBJECT.PERMISSION (on a domain, with its name). Every other libvirt call of the
# service user is refused, including the read-only ones polkit's defaults allow everybody.
polkit_rules() {
    cat <<RULES
// Written by KVM-VDI install.sh --narrow: what the dashboard's service user may ask of libvirt.
// libvirtd checks every API call here (access_drivers = [ "polkit" ] in libvirtd.conf).
polkit.addRule(function (action, subject) {
    if (action.id.indexOf("org.libvirt.api.") !== 0) {
        return polkit.Result.NOT_HANDLED;
    }
    // The host's administrator keeps every right (virsh as root).
    if (subject.user === "root") {
        return polkit.Result.YES;
    }
    if (subject.user !== "$SERVICE_USER") {
        return polkit.Result.NOT_HANDLED;
    }
    var permission = action.id.substring("org.libvirt.api.".length);
    // The host: connect, read its capabilities, facts and domain capabilities (which libvirt
    // files under connect.write), list domains and receive their events.
    var host = ["connect.getattr", "connect.read", "connect.write", "connect.search-domains"];
    // Its domains: define, start, stop, reset, suspend/resume, remove, change devices (CD-ROM,
    // SPICE password), read the definition with its SPICE password, screenshots, snapshots.
    // Not: migrate, memory or disk peeking, core dumps, save images, serial/channel devices.
    var domain = ["domain.getattr", "domain.read", "domain.read-secure", "domain.write",
        "domain.save", "domain.start", "domain.stop", "domain.reset", "domain.init-control",
        "domain.suspend", "domain.delete", "domain.screenshot", "domain.snapshot"];
    var prefixes = ["$TRIAL_PREFIX", "$DOMAIN_PREFIX"];
    if (host.indexOf(permission) >= 0) {
        return polkit.Result.YES;
    }
    if (domain.indexOf(permission) >= 0) {
        var name = action.lookup("domain_name") || "";
        for (var i = 0; i < prefixes.length; i++) {
            if (name.indexOf(prefixes[i]) === 0) {
                return polkit.Result.YES;
            }
        }
    }
    return polkit.Result.NO;
});
RULES
}

configure_narrow() {
    [ -f "$LIBVIRTD_CONF" ] || die "$LIBVIRTD_CONF not found: is libvirt-daemon-system installed?"
    getent passwd "$SERVICE_USER" >/dev/null || die "service user $SERVICE_USER does not exist (run: $0 install)"
    [ -d "$(dirname "$POLKIT_RULES")" ] || die "$(dirname "$POLKIT_RULES") not found: is polkitd installed?"
    local wanted
    wanted=$(polkit_rules)
    if [ "$(cat "$POLKIT_RULES" 2>/dev/null)" != "$wanted" ]; then
        # polkitd reads the rules again by itself when the directory changes.
        printf '%s\n' "$wanted" >"$POLKIT_RULES.tmp"
        chmod 0644 "$POLKIT_RULES.tmp"
        mv "$POLKIT_RULES.tmp" "$POLKIT_RULES"
        changed "$POLKIT_RULES (libvirt rights of $SERVICE_USER: domains ${DOMAIN_PREFIX:-of any name}${DOMAIN_PREFIX:+*})"
    else
        unchanged "$POLKIT_RULES"
    fi
    if access_control_on; then
        unchanged "$LIBVIRTD_CONF: $ACCESS_DRIVERS_LINE"
    else
        write_conf_line "$LIBVIRTD_CONF" access_drivers "$ACCESS_DRIVERS_LINE"
    fi
}

# install without --narrow: undo a narrow set-up made by this script (never an admin's own).
leave_narrow() {
    [ -f "$POLKIT_RULES" ] || return 0
    rm -f "$POLKIT_RULES"
    changed "removed $POLKIT_RULES (group mode: --narrow not given)"
    if access_control_on; then
        local tmp
        tmp=$(mktemp "$LIBVIRTD_CONF.XXXXXX")
        sed 's/^\([[:space:]]*access_drivers[[:space:]]*=\)/#\1/' "$LIBVIRTD_CONF" >"$tmp"
        chmod --reference="$LIBVIRTD_CONF" "$tmp"
        chown --reference="$LIBVIRTD_CONF" "$tmp"
        mv "$tmp" "$LIBVIRTD_CONF"
        changed "$LIBVIRTD_CONF: access_drivers commented out"
        LIBVIRT_CHANGED=1
    fi
}

configure_spice() {
    [ -f "$QEMU_CONF" ] || die "$QEMU_CONF not found: is libvirt-daemon-system installed?"
    # SPICE over TLS only: desktops get a TLS port (defaultMode='secure'), qemu reads the
    # certificate the dashboard issues into $SPICE_TLS_DIR/current.
    set_conf "$QEMU_CONF" spice_tls 1 raw
    set_conf "$QEMU_CONF" spice_tls_x509_cert_dir "$SPICE_TLS_DIR/current"
    set_conf "$QEMU_CONF" remote_display_port_min "$SPICE_PORT_MIN" raw
    set_conf "$QEMU_CONF" remote_display_port_max "$SPICE_PORT_MAX" raw
    [ -z "$CONSOLE_ADDRESS" ] || set_conf "$QEMU_CONF" spice_listen "$CONSOLE_ADDRESS"
    # The service user writes the certificates (no sudo); the set-group-ID bit gives every file
    # group kvm, which qemu runs in, and nobody else may read the key.
    mkdir -p "$(dirname "$SPICE_TLS_DIR")"
    ensure_dir "$SPICE_TLS_DIR" "$SERVICE_USER" kvm 2750 "SPICE certificate directory"
    if [ ! -e "$SPICE_TLS_DIR/current" ]; then
        # libvirtd refuses to start when the directory is missing: an empty one until the
        # dashboard issues the certificate (when the hypervisor is added or checked).
        install -d -o "$SERVICE_USER" -g kvm -m 2750 "$SPICE_TLS_DIR/pending"
        ln -sfn pending "$SPICE_TLS_DIR/current"
        chown -h "$SERVICE_USER:kvm" "$SPICE_TLS_DIR/current"
        changed "$SPICE_TLS_DIR/current (empty until the dashboard issues the certificate)"
        LIBVIRT_CHANGED=1
    fi
}

firewall_rules() {
    local v4 v6
    v4=$(IFS=,; echo "${FIREWALL_V4[*]}")
    v6=$(IFS=,; echo "${FIREWALL_V6[*]}")
    echo "# Written by KVM-VDI install.sh: SPICE ports $SPICE_PORT_MIN-$SPICE_PORT_MAX only from the dashboard."
    echo "table inet $FIREWALL_TABLE"
    echo "delete table inet $FIREWALL_TABLE"
    echo "table inet $FIREWALL_TABLE {"
    echo "    chain input {"
    echo "        type filter hook input priority filter - 1; policy accept;"
    echo "        iifname \"lo\" accept"
    [ -z "$v4" ] || echo "        ip saddr { $v4 } tcp dport $SPICE_PORT_MIN-$SPICE_PORT_MAX accept"
    [ -z "$v6" ] || echo "        ip6 saddr { $v6 } tcp dport $SPICE_PORT_MIN-$SPICE_PORT_MAX accept"
    echo "        tcp dport $SPICE_PORT_MIN-$SPICE_PORT_MAX counter drop"
    echo "    }"
    echo "}"
}

apply_firewall() {
    [ -n "$SPICE_FIREWALL" ] || return 0
    command -v nft >/dev/null || die "--spice-firewall needs nftables (apt-get install nftables)"
    local wanted
    wanted=$(firewall_rules)
    mkdir -p "$(dirname "$FIREWALL_FILE")"
    if [ "$(cat "$FIREWALL_FILE" 2>/dev/null)" != "$wanted" ]; then
        printf '%s\n' "$wanted" >"$FIREWALL_FILE"
        changed "$FIREWALL_FILE (SPICE ports only from $SPICE_FIREWALL)"
    else
        unchanged "$FIREWALL_FILE"
    fi
    nft -f "$FIREWALL_FILE"
    unchanged "nftables table inet $FIREWALL_TABLE applied"
    # Kept across reboots by Debian's nftables.service, which loads $NFTABLES_CONF.
    if [ -f "$NFTABLES_CONF" ] && ! grep -qF "include \"$FIREWALL_FILE\"" "$NFTABLES_CONF"; then
        printf '\ninclude "%s"\n' "$FIREWALL_FILE" >>"$NFTABLES_CONF"
        changed "$NFTABLES_CONF includes $FIREWALL_FILE (enable nftables.service to load it at boot)"
    fi
}

restart_libvirtd() {
    [ "$LIBVIRT_CHANGED" -eq 1 ] || return 0
    if [ "$RESTART" -eq 0 ]; then
        echo "note     libvirtd configuration changed: restart libvirtd to apply it (--no-restart given)"
        return
    fi
    if [ -d /run/systemd/system ]; then
        # Running guests keep running: they do not depend on libvirtd's process.
        systemctl daemon-reload
        systemctl stop libvirtd.service
        systemctl stop libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket 2>/dev/null || true
        systemctl start libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket
        systemctl start libvirtd.service
        changed "restarted libvirtd"
    else
        echo "note     libvirtd configuration changed and systemd is not running: restart libvirtd yourself"
    fi
}

do_install() {
    check_os
    install_packages
    ensure_user
    ensure_dirs
    authorize_dashboard_key
    configure_libvirtd
    if [ "$NARROW" -eq 1 ]; then configure_narrow; else leave_narrow; fi
    configure_spice
    restart_libvirtd
    apply_firewall
    # No sudo rules: everything the dashboard runs (qemu-img, mv, rm, test, df, find)
    # works as the service user on its own directories.
    echo "done     $CHANGES change(s). Verify with: $0 check $(printf '%q ' "${ORIGINAL_ARGS[@]}")"
}

# Only what the dashboard needs of its own on a host whose libvirt someone else manages.
do_user() {
    ensure_user
    ensure_dirs
    authorize_dashboard_key
    echo "done     $CHANGES change(s): user, directories and key only; libvirtd, its sockets and qemu.conf" \
        "were not touched: libvirt must let the group libvirt use qemu:///system (verify with: $0 check)"
}

# --- check -------------------------------------------------------------------------------

MISSING=0

pass() {
    echo "ok       $*"
}

missing() {
    echo "MISSING  $*"
    MISSING=$((MISSING + 1))
}

warn() {
    echo "warning  $*"
}

as_user() {
    runuser -u "$1" -- "${@:2}"
}

# Which set-up is active: the libvirt group's full rights, or narrow (polkit access control).
check_mode() {
    if access_control_on; then
        if [ ! -f "$POLKIT_RULES" ]; then
            missing "$POLKIT_RULES (access_drivers is on, so $SERVICE_USER may do nothing; run: $0 narrow)"
        elif [ "$(cat "$POLKIT_RULES")" = "$(polkit_rules)" ]; then
            pass "mode narrow: libvirt access control (polkit), $SERVICE_USER on domains ${DOMAIN_PREFIX:-of any name}${DOMAIN_PREFIX:+*} only"
        elif [ "$NARROW" -eq 1 ]; then
            missing "$POLKIT_RULES as --narrow writes it for $SERVICE_USER${DOMAIN_PREFIX:+ and --domain-prefix $DOMAIN_PREFIX} (run: $0 narrow)"
        else
            pass "mode narrow: libvirt access control (polkit), rules in $POLKIT_RULES"
        fi
    elif [ "$NARROW" -eq 1 ]; then
        missing "$LIBVIRTD_CONF: $ACCESS_DRIVERS_LINE (--narrow; run: $0 narrow)"
    else
        pass "mode group: members of group libvirt have every libvirt right (root-equivalent; see --narrow)"
    fi
}

do_check() {
    local program
    for program in qemu-img qemu-system-x86_64 libvirtd sshd; do
        if command -v "$program" >/dev/null || [ -x "/usr/sbin/$program" ]; then
            pass "program $program"
        else
            missing "program $program (apt-get install ${PACKAGES[*]})"
        fi
    done
    # UEFI and TPM desktops: OVMF's firmware descriptors, and swtpm (which runs as the service user).
    if compgen -G "/usr/share/qemu/firmware/*edk2-x86_64*.json" >/dev/null; then
        pass "UEFI firmware (ovmf)"
    else
        missing "UEFI firmware (apt-get install ovmf)"
    fi
    for program in swtpm swtpm_setup; do
        if command -v "$program" >/dev/null; then
            pass "program $program"
        else
            missing "program $program (apt-get install swtpm swtpm-tools)"
        fi
    done
    if command -v virt-ssh-helper >/dev/null || command -v nc >/dev/null; then
        pass "libvirt's ssh relay (virt-ssh-helper or nc)"
    else
        missing "virt-ssh-helper or nc (libvirt-daemon package)"
    fi

    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        missing "service user $SERVICE_USER (run: $0 install)"
        echo "result   $MISSING thing(s) missing"
        return 1
    fi
    local groups shell home qemu
    groups=" $(id -nG "$SERVICE_USER") "
    for group in libvirt kvm; do
        if [[ $groups == *" $group "* ]]; then pass "$SERVICE_USER in group $group"; else missing "$SERVICE_USER in group $group"; fi
    done
    shell=$(getent passwd "$SERVICE_USER" | cut -d: -f7)
    if [[ $shell == */nologin || $shell == */false || -z $shell ]]; then
        missing "a login shell for $SERVICE_USER (has ${shell:-none})"
    else
        pass "$SERVICE_USER's shell $shell"
    fi
    if [ "$(getent shadow "$SERVICE_USER" | cut -d: -f2 | cut -c1)" = "!" ]; then
        missing "$SERVICE_USER is locked (\"!\" password): sshd without PAM refuses it; usermod -p '*' $SERVICE_USER"
    else
        pass "$SERVICE_USER not locked"
    fi

    home=$(home_of "$SERVICE_USER")
    local keys=$home/.ssh/authorized_keys
    if [ -f "$keys" ]; then
        local perms
        perms=$(stat -c '%U %a' "$home/.ssh" "$keys" | tr '\n' ' ')
        if [ "$perms" = "$SERVICE_USER 700 $SERVICE_USER 600 " ]; then
            pass "$keys (owner and modes)"
        else
            missing "$home/.ssh owned by $SERVICE_USER mode 700, authorized_keys mode 600 (found: $perms)"
        fi
        if ((8#$(stat -c '%a' "$home") & 8#022)); then
            missing "$home must not be writable by group or others (sshd refuses the key otherwise)"
        fi
        if [ -n "$DASHBOARD_KEY" ]; then
            if grep -qF -- "$(key_blob "$DASHBOARD_KEY")" "$keys"; then
                pass "dashboard key authorized"
            else
                missing "the dashboard key in $keys (run: $0 install --dashboard-key '...')"
            fi
        elif grep -q "$KEY_COMMENT" "$keys"; then
            pass "a dashboard key is authorized"
        else
            missing "a dashboard key in $keys (run: $0 install --dashboard-key '...')"
        fi
    else
        missing "$keys with the dashboard's key (run: $0 install --dashboard-key '...')"
    fi

    qemu=$(qemu_user)
    local label dir
    for label in images volatile ISO; do
        case $label in
            images) dir=$IMAGES_DIR ;;
            volatile) dir=$VOLATILE_DIR ;;
            ISO) dir=$ISO_DIR ;;
        esac
        if [ ! -d "$dir" ]; then
            missing "$label directory $dir"
            continue
        fi
        if as_user "$SERVICE_USER" test -w "$dir" -a -x "$dir"; then
            pass "$label directory $dir writable by $SERVICE_USER"
        else
            missing "$label directory $dir writable by $SERVICE_USER"
        fi
        if ! getent passwd "$qemu" >/dev/null; then
            warn "qemu user $qemu not found: cannot check that qemu can reach $dir"
        elif as_user "$qemu" test -x "$dir"; then
            pass "$label directory $dir reachable by qemu ($qemu)"
        else
            missing "$label directory $dir reachable by qemu ($qemu): check the modes of it and its parents"
        fi
    done

    local value key
    for key in unix_sock_group:libvirt unix_sock_rw_perms:0770 auth_unix_rw:none; do
        value=$(conf_value "$LIBVIRTD_CONF" "${key%%:*}")
        if [ "$value" = "${key#*:}" ]; then
            pass "$LIBVIRTD_CONF: ${key%%:*} = \"${key#*:}\""
        else
            missing "$LIBVIRTD_CONF: ${key%%:*} = \"${key#*:}\" (found: ${value:-default})"
        fi
    done
    check_mode
    if [ -e /lib/systemd/system/libvirtd.socket ] || [ -e /usr/lib/systemd/system/libvirtd.socket ]; then
        if grep -q '^SocketMode=0660' "$SOCKET_DROPIN" 2>/dev/null && grep -q '^SocketGroup=libvirt' "$SOCKET_DROPIN"; then
            pass "$SOCKET_DROPIN"
        else
            missing "$SOCKET_DROPIN (socket activation would leave the socket mode 0666)"
        fi
    fi
    for key in spice_tls:1 spice_tls_x509_cert_dir:$SPICE_TLS_DIR/current; do
        value=$(conf_value "$QEMU_CONF" "${key%%:*}")
        if [ "$value" = "${key#*:}" ]; then
            pass "$QEMU_CONF: ${key%%:*} = ${key#*:}"
        else
            missing "$QEMU_CONF: ${key%%:*} = ${key#*:} (found: ${value:-default})"
        fi
    done
    if [ -d "$SPICE_TLS_DIR" ] && [ "$(stat -c '%U:%G %a' "$SPICE_TLS_DIR")" = "$SERVICE_USER:kvm 2750" ]; then
        pass "$SPICE_TLS_DIR ($SERVICE_USER:kvm 2750)"
    else
        missing "$SPICE_TLS_DIR owned by $SERVICE_USER:kvm mode 2750 (run: $0 install)"
    fi
    if [ -f "$SPICE_TLS_DIR/current/server-cert.pem" ]; then
        pass "SPICE certificate $(openssl x509 -noout -enddate -in "$SPICE_TLS_DIR/current/server-cert.pem" 2>/dev/null | sed 's/notAfter=/valid until /')"
    elif [ -e "$SPICE_TLS_DIR/current" ]; then
        warn "no SPICE certificate yet: add the hypervisor to the dashboard (or press Check there)"
    else
        missing "$SPICE_TLS_DIR/current (run: $0 install)"
    fi
    if [ -n "$SPICE_FIREWALL" ]; then
        if nft list table inet "$FIREWALL_TABLE" >/dev/null 2>&1; then
            pass "nftables table inet $FIREWALL_TABLE"
        else
            missing "nftables table inet $FIREWALL_TABLE (run: $0 firewall --spice-firewall ...)"
        fi
    fi
    local socket=/run/libvirt/libvirt-sock
    if [ -S "$socket" ]; then
        local mode group
        mode=$(stat -c '%a' "$socket")
        group=$(stat -c '%G' "$socket")
        if [ "$group" = libvirt ] && (((8#$mode & 8#007) == 0)); then
            pass "$socket (group $group, mode $mode)"
        else
            missing "$socket for group libvirt only (mode $mode, group $group): restart libvirtd after install"
        fi
    else
        missing "$socket: libvirtd is not running (systemctl start libvirtd.socket libvirtd)"
    fi
    if as_user "$SERVICE_USER" timeout 30 virsh -q -c qemu:///system version >/dev/null 2>&1; then
        pass "libvirt answers $SERVICE_USER on qemu:///system"
    else
        missing "libvirt access for $SERVICE_USER: $(as_user "$SERVICE_USER" timeout 30 virsh -q -c qemu:///system version 2>&1 | tail -n1)"
    fi
    if access_control_on; then
        # Proof that the narrowing is live: a call outside the service user's list is refused.
        local pools
        if pools=$(as_user "$SERVICE_USER" timeout 30 virsh -q -c qemu:///system pool-list --all 2>&1); then
            missing "libvirt refuses $SERVICE_USER what the rules do not allow (it listed storage pools): restart libvirtd, is polkitd running?"
        elif [[ $pools == *"access denied"* ]]; then
            pass "libvirt refuses $SERVICE_USER what the rules do not allow (storage pools)"
        else
            missing "libvirt's access control for $SERVICE_USER: $(tail -n1 <<<"$pools")"
        fi
    fi
    if as_user "$SERVICE_USER" test -r /dev/kvm -a -w /dev/kvm; then
        pass "/dev/kvm usable by $SERVICE_USER"
    else
        missing "/dev/kvm usable by $SERVICE_USER (KVM enabled in the BIOS? group kvm?)"
    fi
    if as_user "$SERVICE_USER" qemu-img --version >/dev/null 2>&1; then
        pass "qemu-img runs as $SERVICE_USER"
    else
        missing "qemu-img for $SERVICE_USER"
    fi
    if command -v sudo >/dev/null && sudo -n -l -U "$SERVICE_USER" 2>/dev/null | grep -q "may run"; then
        warn "$SERVICE_USER has sudo rights; the dashboard needs none"
    fi

    if [ "$MISSING" -eq 0 ]; then
        echo "result   everything is in place"
        return 0
    fi
    echo "result   $MISSING thing(s) missing"
    return 1
}

ORIGINAL_ARGS=(--user "$SERVICE_USER" --home "$HOME_DIR" --images-dir "$IMAGES_DIR" --volatile-dir "$VOLATILE_DIR" --iso-dir "$ISO_DIR")
[ "$NARROW" -eq 0 ] || ORIGINAL_ARGS+=(--narrow)
[ -z "$DOMAIN_PREFIX" ] || ORIGINAL_ARGS+=(--domain-prefix "$DOMAIN_PREFIX")
case $ACTION in
    install) do_install ;;
    user) do_user ;;
    check) do_check ;;
    firewall)
        [ -n "$SPICE_FIREWALL" ] || die "firewall: give --spice-firewall ADDRS"
        apply_firewall
        ;;
    narrow)
        configure_narrow
        restart_libvirtd
        echo "done     $CHANGES change(s)"
        ;;
esac
