/*
 * vm-accel.c - can KVM run an ordinary guest at speed here?
 *
 * Opening /dev/kvm is not enough: on this kind of host /dev/kvm is PVM
 * (kvm_pvm), which creates VMs and vCPUs fine but emulates an ordinary guest
 * about a thousand times slower than native (a Linux boot does not reach init
 * in two minutes). So the probe runs a tiny real-mode guest through the KVM
 * API - PROBE_LOOPS iterations of dec/jnz, then hlt - and times it. Natively
 * that takes well under a millisecond; the run is cut off by a timer after
 * PROBE_LIMIT_MS, and a guest that has not reached hlt by then means KVM is
 * not usable.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "runtime/vm/vm.h"

#define PROBE_LOOPS 1000000u /* ~0.3-1 ms natively */
#define PROBE_LIMIT_MS 25
#define GUEST_MEM 0x2000
#define GUEST_CODE 0x1000

const char *hd_vm_accel_name(enum hd_vm_accel accel)
{
    return accel == HD_VM_ACCEL_KVM ? "kvm" : "tcg";
}

static void probe_alarm(int sig)
{
    (void)sig; /* only interrupts KVM_RUN */
}

static void probe_fail(struct hd_vm_accel_probe *p, const char *what)
{
    snprintf(p->reason, sizeof(p->reason), "%s: %s", what, strerror(errno));
}

void hd_vm_accel_probe(struct hd_vm_accel_probe *p)
{
    memset(p, 0, sizeof(*p));
    p->loop_ms = -1;
    cleanup_close int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        probe_fail(p, "open /dev/kvm");
        return;
    }
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        snprintf(p->reason, sizeof(p->reason), "/dev/kvm: unexpected API version");
        return;
    }
    cleanup_close int vmfd = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vmfd < 0) {
        probe_fail(p, "KVM_CREATE_VM");
        return;
    }
    unsigned char *mem = mmap(NULL, GUEST_MEM, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        probe_fail(p, "mmap guest memory");
        return;
    }
    /* real mode at 0x1000: mov ecx, PROBE_LOOPS; 1: dec ecx; jnz 1b; hlt */
    unsigned char code[] = {0x66, 0xb9, 0, 0, 0, 0, 0x66, 0x49, 0x75, 0xfc, 0xf4};
    uint32_t loops = PROBE_LOOPS;
    memcpy(code + 2, &loops, 4);
    memcpy(mem + GUEST_CODE, code, sizeof(code));
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = GUEST_MEM, .userspace_addr = (uintptr_t)mem};
    struct kvm_run *run = MAP_FAILED;
    int run_size = 0;
    cleanup_close int vcpu = -1;
    if (ioctl(vmfd, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
        probe_fail(p, "KVM_SET_USER_MEMORY_REGION");
        goto out;
    }
    vcpu = ioctl(vmfd, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) {
        probe_fail(p, "KVM_CREATE_VCPU");
        goto out;
    }
    run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size <= 0) {
        probe_fail(p, "KVM_GET_VCPU_MMAP_SIZE");
        goto out;
    }
    run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) {
        probe_fail(p, "mmap kvm_run");
        goto out;
    }
    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) {
        probe_fail(p, "KVM_GET_SREGS");
        goto out;
    }
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    struct kvm_regs regs = {.rip = GUEST_CODE, .rflags = 0x2};
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0 || ioctl(vcpu, KVM_SET_REGS, &regs) < 0) {
        probe_fail(p, "KVM_SET_REGS");
        goto out;
    }

    /* a one-shot timer to this thread interrupts KVM_RUN if the guest is slow */
    struct sigaction sa = {.sa_handler = probe_alarm}, old_sa;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, &old_sa);
    sigset_t alrm, old_mask;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    pthread_sigmask(SIG_UNBLOCK, &alrm, &old_mask);
    struct sigevent sev = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGALRM};
    sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    timer_t timer;
    bool have_timer = timer_create(CLOCK_MONOTONIC, &sev, &timer) == 0;
    if (have_timer) {
        struct itimerspec its = {.it_value = {0, PROBE_LIMIT_MS * 1000000L}};
        timer_settime(timer, 0, &its, NULL);
    }
    uint64_t start = hd_now_ns();
    int r = -1;
    int exit_reason = -1;
    while (have_timer) {
        r = ioctl(vcpu, KVM_RUN, 0);
        exit_reason = (int)run->exit_reason;
        if (r < 0 || exit_reason != KVM_EXIT_INTR)
            break;
    }
    int run_errno = errno;
    uint64_t elapsed = hd_now_ns() - start;
    if (have_timer)
        timer_delete(timer);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    sigaction(SIGALRM, &old_sa, NULL);

    if (!have_timer) {
        snprintf(p->reason, sizeof(p->reason), "timer_create failed; cannot bound the probe");
    } else if (r < 0 && run_errno == EINTR) {
        snprintf(p->reason, sizeof(p->reason),
                 "a %u-iteration guest loop did not finish within %d ms (emulated or nested KVM, e.g. PVM)",
                 PROBE_LOOPS, PROBE_LIMIT_MS);
    } else if (r < 0) {
        errno = run_errno;
        probe_fail(p, "KVM_RUN");
    } else if (exit_reason != KVM_EXIT_HLT) {
        snprintf(p->reason, sizeof(p->reason), "probe guest stopped with exit reason %d, not hlt", exit_reason);
    } else {
        p->loop_ms = (double)elapsed / 1e6;
        p->usable = true;
        snprintf(p->reason, sizeof(p->reason), "a %u-iteration guest loop ran in %.2f ms", PROBE_LOOPS, p->loop_ms);
    }
out:
    if (run != MAP_FAILED)
        munmap(run, (size_t)run_size);
    munmap(mem, GUEST_MEM);
}

int hd_vm_accel_choose(const char *want, bool quiet, enum hd_vm_accel *out, hd_error_t *err)
{
    if (want && strcmp(want, "tcg") == 0) {
        *out = HD_VM_ACCEL_TCG;
        return 0;
    }
    struct hd_vm_accel_probe probe;
    hd_vm_accel_probe(&probe);
    if (probe.usable) {
        *out = HD_VM_ACCEL_KVM;
        return 0;
    }
    if (want && strcmp(want, "kvm") == 0)
        return hd_error_set(err, 0, "vm.accel kvm: KVM cannot run guests at speed here: %s", probe.reason);
    if (!quiet)
        hd_log(HD_LOG_WARN, "vm", "KVM not usable (%s); using TCG, expect seconds to boot", probe.reason);
    *out = HD_VM_ACCEL_TCG;
    return 0;
}
