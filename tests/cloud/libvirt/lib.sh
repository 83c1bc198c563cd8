# Sourced by tests/cloud/cloud when NLM_CLOUD_VIRT=libvirt: node1.maas and
# node4.maas on Nova's libvirt driver with QEMU (TCG), each with its own
# libvirtd in its own mount+UTS namespace. See tests/cloud/libvirt/README.md.
# Everything here is prefixed lv_ and called from a few `libvirt` hooks of
# the main script; the fake-driver path does not read this file.

LV=$HERE/libvirt
# Own state dir and ports by default, so this cloud runs beside a
# fake-driver cloud on the defaults (each port is still NLM_CLOUD_*_PORT).
: "${NLM_CLOUD_DIR:=/var/tmp/nlm-cloud-libvirt}"
: "${NLM_CLOUD_KEYSTONE_PORT:=15000}" "${NLM_CLOUD_KEYSTONE_SHORT_PORT:=15001}"
: "${NLM_CLOUD_NOVA_PORT:=18774}" "${NLM_CLOUD_PLACEMENT_PORT:=18778}"
: "${NLM_CLOUD_GLANCE_PORT:=19292}" "${NLM_CLOUD_NEUTRON_PORT:=19696}"
: "${NLM_CLOUD_MYSQL_PORT:=13306}" "${NLM_CLOUD_RABBIT_PORT:=15672}"
: "${NLM_CLOUD_EPMD_PORT:=14369}" "${NLM_CLOUD_RABBIT_DIST_PORT:=35672}"
# each node's sshd (on the node's address), for cold migration's disk copy
: "${NLM_CLOUD_SSH_PORT:=10022}"
export NLM_CLOUD_VIRT=libvirt NLM_CLOUD_DIR

LV_BACKPORTS=(qemu-system-x86 qemu-system-common qemu-system-data seabios libvirt-daemon
    libvirt-daemon-driver-qemu libvirt-clients libvirt0 libvirt-common libvirt-daemon-common
    libvirt-daemon-log libvirt-dev)
LV_BOOKWORM=(busybox-static cpio openssh-server openssh-client)
LV_LIBVIRT_PYTHON=libvirt-python==11.3.0
LV_SOURCES=/etc/apt/sources.list.d/nlm-bookworm-backports.sources
# live-migration knobs (settings taken at `up`)
LV_BANDWIDTH=${NLM_LIBVIRT_BANDWIDTH:-20}            # MiB/s: non-convergence is deterministic
LV_MONITOR_INTERVAL=${NLM_LIBVIRT_MONITOR_INTERVAL:-1}  # s: progress fields refresh this often
LV_POST_COPY=${NLM_LIBVIRT_POST_COPY:-false}
# true: both nodes' instances_path is one directory ($NLM_CLOUD_DIR/shared-instances,
# in libvirt's shared_filesystems): Nova sees shared storage, no block migration
LV_SHARED=${NLM_LIBVIRT_SHARED_INSTANCES:-false}
# qemu (TCG) unless NLM_LIBVIRT_KVM=probe and the guest boots under KVM:
# a /dev/kvm that exists may still hang Linux (nested PVM here)
LV_KVM=${NLM_LIBVIRT_KVM:-off}

lv_addr() { case $1 in node1.maas) echo 127.0.0.2 ;; node4.maas) echo 127.0.0.3 ;; *) die "no address for $1" ;; esac; }
lv_index() { case $1 in node1.maas) echo 1 ;; node4.maas) echo 4 ;; esac; }

# ---------------------------------------------------------------- install
lv_missing() {  # PKG...: those not installed
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
    done
}

lv_install() {
    local missing=() bp=()
    mapfile -t bp < <(lv_missing "${LV_BACKPORTS[@]}")
    mapfile -t missing < <(lv_missing "${LV_BOOKWORM[@]}")
    # qemu-system from backports must match the image's backports qemu-utils
    local v
    for p in qemu-system-x86 libvirt-daemon; do
        v=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)
        [ -n "$v" ] && [[ $v != *bpo12* ]] && bp+=("$p")
    done
    if [ ${#bp[@]} -gt 0 ] || [ ${#missing[@]} -gt 0 ]; then
        if [ ! -f "$LV_SOURCES" ]; then
            # The machine's own Debian mirror (the first URIs of its
            # debian.sources, or of a bookworm line in sources.list).
            local mirror
            mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
            [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 ~ /^bookworm/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
            [ -n "$mirror" ] || die "no Debian apt source on this machine to add bookworm-backports from"
            mirror=${mirror%% *}
            cat >"$LV_SOURCES" <<SRC
# written by tests/cloud/cloud install (NLM_CLOUD_VIRT=libvirt): qemu and libvirt from bookworm-backports
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        fi
        say "apt-get install -t bookworm-backports ${bp[*]} ${missing[*]}"
        local made_policy= rc=0
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\n# written by tests/cloud/cloud install: no daemons at package install\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d; made_policy=1
        fi
        {
            apt-get update -qq &&
            { [ ${#bp[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends -t bookworm-backports "${LV_BACKPORTS[@]}"; } &&
            { [ ${#missing[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "${missing[@]}"; }
        } >"$MC/install-apt-libvirt.log" 2>&1 || rc=$?
        [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
        [ $rc -eq 0 ] || { tail -20 "$MC/install-apt-libvirt.log" >&2
            die "apt-get of the libvirt packages failed (see $MC/install-apt-libvirt.log)"; }
    fi
    local left
    left=$(lv_missing "${LV_BACKPORTS[@]}" "${LV_BOOKWORM[@]}" | tr '\n' ' ')
    [ -z "$left" ] || die "packages still missing after install: $left"
    [[ $(dpkg-query -W -f='${Version}' qemu-system-x86) == *bpo12* ]] ||
        die "qemu-system-x86 is not the bookworm-backports build"
    say "libvirt packages present (qemu $(dpkg-query -W -f='${Version}' qemu-system-x86), libvirt $(dpkg-query -W -f='${Version}' libvirt-daemon))"
    if ! "$VENV/bin/python" -c 'import libvirt' 2>/dev/null; then
        say "pip install $LV_LIBVIRT_PYTHON"
        "$VENV/bin/pip" install "$LV_LIBVIRT_PYTHON" >>"$MC/install-pip.log" 2>&1 ||
            { tail -20 "$MC/install-pip.log" >&2; die "pip install $LV_LIBVIRT_PYTHON failed (see $MC/install-pip.log)"; }
    fi
    "$LV/build-guest" "$MC/guest" >&2 || die "guest build failed"
    lv_check_namespaces
}

lv_check_namespaces() {
    unshare -m -u --propagation private true 2>/dev/null ||
        die "cannot create mount+UTS namespaces (unshare -m -u): the libvirt computes need them (root, no seccomp block)"
}

lv_virt_type() {
    [ "$LV_KVM" = probe ] || { echo qemu; return; }
    [ -e /dev/kvm ] || { say "no /dev/kvm: TCG" >&2; echo qemu; return; }
    local g=$MC/guest
    timeout 20 qemu-system-x86_64 -accel kvm -m 128 -display none -no-reboot -monitor none \
        -serial "file:$MC/kvm-probe.log" -kernel "$g/vmlinuz" -initrd "$g/initrd.img" \
        -append "console=ttyS0 quiet" >/dev/null 2>&1 || true
    if grep -q 'nlm-heartbeat' "$MC/kvm-probe.log" 2>/dev/null; then
        say "the guest boots under KVM: virt_type kvm" >&2; echo kvm
    else
        say "the guest does not boot under KVM in 20 s ($MC/kvm-probe.log): TCG" >&2; echo qemu
    fi
}

# ---------------------------------------------------------------- configs
LV_IMG_KERNEL=a1a1a1a1-0000-4000-8000-000000000001
LV_IMG_RAMDISK=a1a1a1a1-0000-4000-8000-000000000002

# Cold migration and resize copy the instance directory between computes
# over SSH (nova/virt/libvirt/volume/remotefs.py SshDriver: `ssh -o
# BatchMode=yes <dest> touch|mkdir -p|rm`, `scp -r`; the destination is
# the other compute's my_ip; finish_migration copies an image back from
# the source's host name only when Glance no longer has it). Each node runs an sshd in its own namespaces (so a
# command lands in that node's /var/lib/nova), with a key pair and host
# key of this cloud's own; nova-compute finds `ssh` and `scp` first on its
# PATH reading this cloud's client config. Nothing in ~/.ssh or /etc/ssh
# is read or changed.
lv_write_ssh() {
    local d=$MC/ssh h a names=
    mkdir -p "$d" /run/sshd; chmod 700 "$d"
    [ -f "$d/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C nlm-cloud-client -f "$d/id_ed25519"
    [ -f "$d/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C nlm-cloud-host -f "$d/host_ed25519"
    cp "$d/id_ed25519.pub" "$d/authorized_keys"; chmod 600 "$d/authorized_keys"
    for h in "${HOSTS[@]}"; do
        a=$(lv_addr "$h")
        names+="[$h]:$NLM_CLOUD_SSH_PORT,[${h%%.*}]:$NLM_CLOUD_SSH_PORT,[$a]:$NLM_CLOUD_SSH_PORT,"
        cat >"$ETC/libvirt/$h/sshd_config" <<CNF
ListenAddress $a:$NLM_CLOUD_SSH_PORT
HostKey $d/host_ed25519
AuthorizedKeysFile $d/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
Subsystem sftp internal-sftp
LogLevel INFO
CNF
    done
    echo "${names%,} $(cut -d' ' -f1,2 "$d/host_ed25519.pub")" >"$d/known_hosts"
    cat >"$d/config" <<CNF
Host node1.maas node1 127.0.0.2 node4.maas node4 127.0.0.3
    Port $NLM_CLOUD_SSH_PORT
    User root
    IdentityFile $d/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $d/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR
CNF
    local tool
    for tool in ssh scp; do
        printf '#!/bin/sh\n# written by tests/cloud/cloud (libvirt mode): this cloud'"'"'s own SSH config\nexec /usr/bin/%s -F %s "$@"\n' \
            "$tool" "$d/config" >"$MC/lib/bin/$tool"
        chmod 755 "$MC/lib/bin/$tool"
    done
}

lv_start_sshds() {  # the libvirtds run: an sshd in each node's namespaces
    local h pid
    for h in "${HOSTS[@]}"; do
        pid=$(pid_of "libvirtd-$h")
        start "sshd-$h" nsenter -t "$pid" -m -u -- /usr/sbin/sshd -D -e -f "$ETC/libvirt/$h/sshd_config"
    done
    for h in "${HOSTS[@]}"; do
        wait_for "sshd-$h" 30 "$MC/lib/bin/ssh" "$(lv_addr "$h")" true
    done
}

lv_write_configs() {
    [ -f "$MC/guest/guest.json" ] || die "no guest in $MC/guest: run '$0 install' (NLM_CLOUD_VIRT=libvirt)"
    "$VENV/bin/python" -c 'import libvirt' 2>/dev/null || die "libvirt-python missing: run '$0 install'"
    lv_check_namespaces
    local virt_type
    virt_type=$(lv_virt_type)
    mkdir -p /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /var/lib/nova
    # the images the Glance stand-in serves with their real bytes; the guest
    # has no ACPI handler, so a stop (os-stop) is Nova's power-off after
    # the image's os_shutdown_timeout (5 s for the idle one, else Nova's 60)
    cat >"$MC/guest/images.json" <<JSON
[
 {"id": "$LV_IMG_KERNEL", "name": "nlm-guest-kernel", "file": "vmlinuz", "disk_format": "aki", "container_format": "aki"},
 {"id": "$LV_IMG_RAMDISK", "name": "nlm-guest-ramdisk", "file": "initrd.img", "disk_format": "ari", "container_format": "ari"},
 {"id": "a1a1a1a1-0000-4000-8000-000000000010", "name": "nlm-guest-idle", "file": "root.raw", "disk_format": "raw", "container_format": "bare",
  "properties": {"kernel_id": "$LV_IMG_KERNEL", "ramdisk_id": "$LV_IMG_RAMDISK", "os_command_line": "console=ttyS0 quiet", "nlm_guest": "idle", "os_shutdown_timeout": "5"}},
 {"id": "a1a1a1a1-0000-4000-8000-000000000011", "name": "nlm-guest-dirty-8-200", "file": "root.raw", "disk_format": "raw", "container_format": "bare",
  "properties": {"kernel_id": "$LV_IMG_KERNEL", "ramdisk_id": "$LV_IMG_RAMDISK", "os_command_line": "console=ttyS0 quiet dirty=8 dirtyms=200", "nlm_guest": "dirty-8-200"}},
 {"id": "a1a1a1a1-0000-4000-8000-000000000012", "name": "nlm-guest-dirty-2-200", "file": "root.raw", "disk_format": "raw", "container_format": "bare",
  "properties": {"kernel_id": "$LV_IMG_KERNEL", "ramdisk_id": "$LV_IMG_RAMDISK", "os_command_line": "console=ttyS0 quiet dirty=2 dirtyms=200", "nlm_guest": "dirty-2-200"}},
 {"id": "a1a1a1a1-0000-4000-8000-000000000013", "name": "nlm-guest-dirty-4-200", "file": "root.raw", "disk_format": "raw", "container_format": "bare",
  "properties": {"kernel_id": "$LV_IMG_KERNEL", "ramdisk_id": "$LV_IMG_RAMDISK", "os_command_line": "console=ttyS0 quiet dirty=4 dirtyms=200", "nlm_guest": "dirty-4-200"}},
 {"id": "a1a1a1a1-0000-4000-8000-000000000014", "name": "nlm-guest-dirty-16-200", "file": "root.raw", "disk_format": "raw", "container_format": "bare",
  "properties": {"kernel_id": "$LV_IMG_KERNEL", "ramdisk_id": "$LV_IMG_RAMDISK", "os_command_line": "console=ttyS0 quiet dirty=16 dirtyms=200", "nlm_guest": "dirty-16-200"}}
]
JSON
    export NLM_STUB_IMAGES=$MC/guest/images.json
    # a rebuilt guest keeps its image ids: the nodes' image caches (_base)
    # of an older one must go, or they boot the old kernel and initrd
    mkdir -p "$MC/nodes"
    if ! cmp -s "$MC/guest/.stamp" "$MC/nodes/.guest-stamp"; then
        rm -rf "$MC"/nodes/*/nova/instances/_base
        cp "$MC/guest/.stamp" "$MC/nodes/.guest-stamp"
    fi
    echo libvirt >"$MC/virt"
    mkdir -p "$MC/lib/bin"
    # nova's privsep helper is started through sudo: we are root already
    printf '#!/bin/sh\nexec "$@"\n' >"$MC/lib/bin/sudo"; chmod 755 "$MC/lib/bin/sudo"
    local h a i etc nd ipath=/var/lib/nova/instances shared=
    if [ "$LV_SHARED" = true ]; then
        ipath=$MC/shared-instances shared="shared_filesystems = [ \"$MC/shared-instances\" ]"
        mkdir -p "$ipath"
    fi
    for h in "${HOSTS[@]}"; do
        a=$(lv_addr "$h") i=$(lv_index "$h") etc=$ETC/libvirt/$h nd=$MC/nodes/$h
        mkdir -p "$etc/qemu" "$nd"/{run,lib,cache,log,nova/instances}
        cat >"$etc/hosts" <<HOSTS
127.0.0.1 localhost
127.0.0.2 node1.maas node1
127.0.0.3 node4.maas node4
HOSTS
        cat >"$etc/libvirtd.conf" <<CNF
listen_tls = 0
listen_tcp = 1
listen_addr = "$a"
auth_tcp = "none"
auth_unix_rw = "none"
unix_sock_group = "root"
host_uuid = "6e6c6d00-0000-4000-8000-00000000000$i"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
CNF
        cat >"$etc/qemu.conf" <<CNF
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
migration_address = "$a"
migration_host = "$h"
migration_port_min = $((49152 + (i / 4) * 48))
migration_port_max = $((49199 + (i / 4) * 48))
$shared
CNF
        echo 'uri_default = "qemu:///system"' >"$etc/libvirt.conf"
        cat >"$ETC/nova/compute-$h-libvirt.conf" <<CNF
[DEFAULT]
compute_driver = libvirt.LibvirtDriver
my_ip = $a
instances_path = $ipath
[libvirt]
virt_type = $virt_type
connection_uri = qemu:///system
cpu_mode = custom
cpu_models = qemu64
images_type = qcow2
live_migration_scheme = tcp
live_migration_inbound_addr = $h
live_migration_bandwidth = $LV_BANDWIDTH
live_migration_monitor_interval = $LV_MONITOR_INTERVAL
live_migration_permit_post_copy = $LV_POST_COPY
live_migration_permit_auto_converge = false
live_migration_timeout_action = abort
[workarounds]
disable_rootwrap = true
disable_deep_image_inspection = true
CNF
    done
    lv_write_ssh
}

# ---------------------------------------------------------------- processes
lv_services() { local h; for h in "${HOSTS[@]}"; do echo "libvirtd-$h"; echo "sshd-$h"; done; }

lv_virsh() {  # HOST ARGS...: virsh against that node's libvirtd (its TCP socket)
    local h=$1; shift
    timeout 20 virsh -q -c "qemu+tcp://$(lv_addr "$h")/system" "$@"
}

lv_start_computes() {  # after the conductor consumes
    local h pid
    for h in "${HOSTS[@]}"; do
        start "libvirtd-$h" unshare -m -u --propagation private "$LV/node" "$h" "$MC/nodes/$h" "$ETC/libvirt/$h"
    done
    for h in "${HOSTS[@]}"; do
        wait_for "libvirtd-$h" 60 lv_virsh "$h" version
    done
    lv_start_sshds
    lv_start_nova_computes
}

lv_start_nova_computes() {  # the libvirtds run
    local h pid
    for h in "${HOSTS[@]}"; do
        pid=$(pid_of "libvirtd-$h")
        start "nova-compute-$h" nsenter -t "$pid" -m -u -- env PATH="$MC/lib/bin:$VENV/bin:$PATH" \
            "$VENV/bin/nova-compute" --config-file "$ETC/nova/nova.conf" \
            --config-file "$ETC/nova/compute-$h.conf" --config-file "$ETC/nova/compute-$h-libvirt.conf" \
            --log-file "$LOG/nova-compute-$h.log"
    done
}

# the guests' QEMU processes (libvirt daemonizes them: not in libvirtd's session)
lv_qemu_pids() {
    local h f
    for h in "${HOSTS[@]}"; do
        for f in "$MC/nodes/$h/run/qemu/"*.pid; do
            if [ -f "$f" ]; then cat "$f" 2>/dev/null; echo; fi
        done
    done | { grep -E '^[0-9]+$' || true; } | while read -r p; do
        if pid_running "$p" && grep -qa qemu-system "/proc/$p/cmdline" 2>/dev/null; then echo "$p"; fi
    done
}

lv_down() {  # after the computes stopped: guests, then the libvirtds
    local h d pids
    for h in "${HOSTS[@]}"; do
        alive "libvirtd-$h" || continue
        for d in $(lv_virsh "$h" list --name 2>/dev/null); do
            lv_virsh "$h" destroy "$d" >/dev/null 2>&1 || true
        done
    done
    pids=$(lv_qemu_pids | tr '\n' ' ')
    if [ -n "${pids// }" ]; then
        say "killing guest QEMU processes $pids"
        kill -KILL $pids 2>/dev/null || true
    fi
    local svcs=()
    mapfile -t svcs < <(lv_services)
    stop_pids "${svcs[@]}"
    pids=$(lv_qemu_pids | tr '\n' ' ')
    [ -z "${pids// }" ] || { say "guest QEMU still running: $pids"; return 1; }
}
