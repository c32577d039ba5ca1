#!/bin/sh
# PID 1 of the test guest (installed into the root by tests/vm/rootfs.py).
# Mounts the usual pseudo file systems, the project and shared/ at their host
# paths, runs /vmrun/cmd.sh, reports its exit status and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
for d in /tmp /run /var/tmp /root /var/lib /var/cache /var/log; do mount -t tmpfs tmpfs "$d"; done
opts=trans=virtio,version=9p2000.L,msize=512000
# vmabpf.initramfs: no virtio transport in this kernel; the root, the project and /vmrun came
# in the initramfs (tests/vm/initramfs.py), and new files go back over the console
initramfs=
case " $(cat /proc/cmdline) " in *" vmabpf.initramfs=1 "*) initramfs=1 ;; esac
[ -n "$initramfs" ] || mount -t 9p -o "$opts" vmrun /vmrun
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vmabpf.project=?*) project=${arg#vmabpf.project=} ;;
    esac
    [ -n "$initramfs" ] && continue
    case "$arg" in
        # mkdir: the path may be under one of the tmpfs mounted above (e.g. a checkout in /tmp)
        vmabpf.project=?*) p=${arg#vmabpf.project=}; mkdir -p "$p" 2>/dev/null; mount -t 9p -o "$opts" project "$p" ;;
        vmabpf.shared=?*) p=${arg#vmabpf.shared=}; mkdir -p "$p" 2>/dev/null; mount -t 9p -o "$opts,ro" shared "$p" ;;
    esac
done
# a guest without an RTC driver (arm64 6.6) starts in 1970: take the host's time at boot (tar and
# make warn about files "in the future" otherwise)
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vmabpf.time=?*) [ "$(date +%s)" -lt 946684800 ] && date -s "@${arg#vmabpf.time=}" >/dev/null 2>&1 ;;
    esac
done
[ -n "$initramfs" ] && touch /vmrun/stamp
hostname vmabpf-guest 2>/dev/null
# Watchdog: shortly before the runner's timeout, show what every task is waiting for (a hang leaves
# the CPUs idle and says nothing otherwise).
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vmabpf.watchdog=?*) wd=${arg#vmabpf.watchdog=}
            (sleep "$wd"
             echo "=== vmabpf guest watchdog after ${wd}s: tasks and what they wait for" > /dev/console
             ps -eo pid,ppid,stat,wchan:32,etime,args > /dev/console 2>&1
             for t in /proc/[0-9]*/task/*; do
                 case "$(cut -d' ' -f3 "$t/stat" 2>/dev/null)" in D|S) ;; *) continue ;; esac
                 [ -r "$t/stack" ] && { echo "--- $t $(cat "$t/comm")"; cat "$t/stack"; } > /dev/console 2>&1
             done
             echo 1 > /proc/sys/kernel/sysrq; echo w > /proc/sysrq-trigger
             pkill -USR1 -f vmatrace_bpf) &
            ;;
    esac
done
echo VMABPF_GUEST_START > /dev/console
sh /vmrun/cmd.sh </dev/null >/dev/console 2>&1
rc=$?
echo "$rc" > /vmrun/rc
if [ -n "$initramfs" ] && [ -n "$project" ]; then
    find "$project" -newer /vmrun/stamp -type f ! -path '*/__pycache__/*' > /tmp/vmabpf-files 2>/dev/null
    if [ -s /tmp/vmabpf-files ]; then
        echo VMABPF_FILES_BEGIN > /dev/console
        tar -cf - -T /tmp/vmabpf-files 2>/dev/null | base64 > /dev/console
        echo VMABPF_FILES_END > /dev/console
    fi
fi
sync
echo "VMABPF_GUEST_RC=$rc" > /dev/console
echo o > /proc/sysrq-trigger
