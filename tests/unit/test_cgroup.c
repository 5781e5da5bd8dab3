/* test_cgroup.c - the pure parts of the cgroup code: weight→shares, CPU quota,
 * swap limit math, mode parsing and detection, v1 mount lookup, parent names,
 * the CFS period, cpuset lists, blkio weight→io.weight, hugetlb page sizes. */
#include "cgroup/internal.h"
#include "check.h"
#include "spec/spec.h"
#include "base/util.h"

static void test_weight_to_shares(void)
{
    /* The OCI/crun conversion: shares = 2 + ((weight - 1) * 262142) / 9999. */
    CHECK(hd_cgroup_weight_to_shares(1) == 2);
    CHECK(hd_cgroup_weight_to_shares(10000) == 262144);
    CHECK(hd_cgroup_weight_to_shares(100) == 2597);
    CHECK(hd_cgroup_weight_to_shares(5000) == 2 + (4999ULL * 262142) / 9999);
    /* out-of-range weights clamp */
    CHECK(hd_cgroup_weight_to_shares(0) == 2);
    CHECK(hd_cgroup_weight_to_shares(20000) == 262144);
}

static void test_cpu_quota(void)
{
    CHECK(hd_cgroup_cpu_quota_us(0.5, 100000) == 50000);
    CHECK(hd_cgroup_cpu_quota_us(1.0, 100000) == 100000);
    CHECK(hd_cgroup_cpu_quota_us(2.25, 100000) == 225000);
    CHECK(hd_cgroup_cpu_quota_us(0.333333, 100000) == 33333);
    /* the kernel refuses quotas below 1 ms */
    CHECK(hd_cgroup_cpu_quota_us(0.001, 100000) == 1000);
    CHECK(hd_cgroup_cpu_quota_us(1024, 100000) == 102400000);
}

static void test_cpu_period_and_cpuset_lists(void)
{
    struct hd_resources r = {0};
    CHECK(hd_cgroup_cpu_period_us(&r) == 100000);
    r.cpu_period_us = 500000;
    CHECK(hd_cgroup_cpu_period_us(&r) == 500000);
    CHECK(hd_cgroup_cpu_quota_us(50000.0 / 500000.0, 500000) == 50000);
    CHECK(hd_cgroup_cpuset_list_valid("0"));
    CHECK(hd_cgroup_cpuset_list_valid("0-3"));
    CHECK(hd_cgroup_cpuset_list_valid("0,2-3,7"));
    CHECK(hd_cgroup_cpuset_list_valid("12-12"));
    CHECK(!hd_cgroup_cpuset_list_valid(""));
    CHECK(!hd_cgroup_cpuset_list_valid("abc"));
    CHECK(!hd_cgroup_cpuset_list_valid("0-"));
    CHECK(!hd_cgroup_cpuset_list_valid("3-1"));
    CHECK(!hd_cgroup_cpuset_list_valid("0,,1"));
    CHECK(!hd_cgroup_cpuset_list_valid("0,"));
    CHECK(!hd_cgroup_cpuset_list_valid(" 0"));
    CHECK(!hd_cgroup_cpuset_list_valid("-1"));
}

static void test_blkio_weight_and_page_sizes(void)
{
    /* runc's conversion: 1 + (weight - 10) * 9999 / 990 */
    CHECK(hd_cgroup_blkio_weight_to_io_weight(10) == 1);
    CHECK(hd_cgroup_blkio_weight_to_io_weight(1000) == 10000);
    CHECK(hd_cgroup_blkio_weight_to_io_weight(500) == 1 + 490 * 9999 / 990);
    CHECK(hd_cgroup_blkio_weight_to_io_weight(1) == 1);
    CHECK(hd_cgroup_hugepage_size_valid("2MB"));
    CHECK(hd_cgroup_hugepage_size_valid("1GB"));
    CHECK(hd_cgroup_hugepage_size_valid("64KB"));
    CHECK(!hd_cgroup_hugepage_size_valid("2XB"));
    CHECK(!hd_cgroup_hugepage_size_valid("MB"));
    CHECK(!hd_cgroup_hugepage_size_valid("02MB"));
    CHECK(!hd_cgroup_hugepage_size_valid("2MB/"));
    CHECK(!hd_cgroup_hugepage_size_valid("../2MB"));
}

static void test_swap_limits(void)
{
    struct hd_resources r = {.memory = 64 << 20};
    /* default: no swap */
    CHECK(hd_cgroup_v1_memsw_limit(&r) == 64 << 20);
    CHECK(hd_cgroup_v2_swap_max(&r) == 0);
    /* -1: unlimited swap */
    r.memory_swap = -1;
    CHECK(hd_cgroup_v1_memsw_limit(&r) == -1);
    CHECK(hd_cgroup_v2_swap_max(&r) == -1);
    /* memory + swap = 96M: v1 takes the sum, v2 the swap part */
    r.memory_swap = 96 << 20;
    CHECK(hd_cgroup_v1_memsw_limit(&r) == 96 << 20);
    CHECK(hd_cgroup_v2_swap_max(&r) == 32 << 20);
}

static void test_modes(void)
{
    enum hd_cgroup_mode m = HD_CGROUP_V1;
    CHECK(hd_cgroup_mode_parse("v2", &m) == 0 && m == HD_CGROUP_V2);
    CHECK(hd_cgroup_mode_parse("hybrid", &m) == 0 && m == HD_CGROUP_HYBRID);
    CHECK(hd_cgroup_mode_parse("v1", &m) == 0 && m == HD_CGROUP_V1);
    CHECK(hd_cgroup_mode_parse("V2", &m) < 0);
    CHECK(hd_cgroup_mode_parse("", &m) < 0);
    CHECK(hd_cgroup_mode_parse(NULL, &m) < 0);
    CHECK_STR(hd_cgroup_mode_name(HD_CGROUP_HYBRID), "hybrid");
    CHECK_STR(hd_cgroup_mode_name(HD_CGROUP_V1), "v1");
    CHECK_STR(hd_cgroup_mode_name(HD_CGROUP_V2), "v2");

    const unsigned long cgroup2 = 0x63677270, tmpfs = 0x01021994, ext4 = 0xef53;
    CHECK(hd_cgroup_mode_from_fs(cgroup2, false) == HD_CGROUP_V2);
    CHECK(hd_cgroup_mode_from_fs(cgroup2, true) == HD_CGROUP_V2);
    CHECK(hd_cgroup_mode_from_fs(tmpfs, true) == HD_CGROUP_HYBRID);
    CHECK(hd_cgroup_mode_from_fs(tmpfs, false) == HD_CGROUP_V1);
    CHECK(hd_cgroup_mode_from_fs(ext4, true) == HD_CGROUP_V1);
}

/* This host's layout: cpu and cpuacct on separate mounts. */
static const char *const separate_mounts =
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

/* systemd's layout: cpu,cpuacct co-mounted, optional fields before the "-". */
static const char *const comounted =
    "25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
    "28 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:11 - cgroup cgroup rw,cpu,cpuacct\n"
    "29 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:12 - cgroup cgroup rw,memory\n"
    "30 25 0:28 / /sys/fs/cgroup/net_cls,net_prio rw shared:13 - cgroup cgroup rw,net_cls,net_prio\n"
    "31 25 0:29 / /sys/fs/cgroup/freezer rw shared:14 - cgroup cgroup rw,freezer";

static void check_mount(const char *mountinfo, const char *controller, const char *want)
{
    cleanup_free char *got = hd_cgroup_v1_mount_point(mountinfo, controller);
    if (want == NULL)
        CHECK(got == NULL);
    else
        CHECK_STR(got, want);
}

static void test_mount_points(void)
{
    check_mount(separate_mounts, "cpu", "/sys/fs/cgroup/cpu");
    check_mount(separate_mounts, "cpuacct", "/sys/fs/cgroup/cpuacct");
    check_mount(separate_mounts, "memory", "/sys/fs/cgroup/memory");
    check_mount(separate_mounts, "pids", "/sys/fs/cgroup/pids");
    check_mount(separate_mounts, "freezer", NULL);
    check_mount(separate_mounts, "systemd", NULL); /* "name=systemd" is not a controller named systemd */
    check_mount(comounted, "cpu", "/sys/fs/cgroup/cpu,cpuacct");
    check_mount(comounted, "cpuacct", "/sys/fs/cgroup/cpu,cpuacct");
    check_mount(comounted, "freezer", "/sys/fs/cgroup/freezer"); /* last line, no newline */
    check_mount(comounted, "net_prio", "/sys/fs/cgroup/net_cls,net_prio");
    check_mount(comounted, "net", NULL); /* whole items only */
    check_mount(comounted, "pids", NULL);
    check_mount("", "memory", NULL);
    check_mount("garbage\n\n1 2 3\n", "memory", NULL);
    /* a cgroup2 mount never answers for a v1 controller */
    check_mount("41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,memory\n", "memory", NULL);
}

static void test_parent_names(void)
{
    CHECK(hd_cgroup_parent_valid("hedge"));
    CHECK(hd_cgroup_parent_valid("hedge-test-123"));
    CHECK(hd_cgroup_parent_valid("a/b"));
    CHECK(hd_cgroup_parent_valid("a/.hidden"));
    CHECK(!hd_cgroup_parent_valid(""));
    CHECK(!hd_cgroup_parent_valid(NULL));
    CHECK(!hd_cgroup_parent_valid("/hedge"));
    CHECK(!hd_cgroup_parent_valid("hedge/"));
    CHECK(!hd_cgroup_parent_valid("a//b"));
    CHECK(!hd_cgroup_parent_valid(".."));
    CHECK(!hd_cgroup_parent_valid("a/../b"));
    CHECK(!hd_cgroup_parent_valid("a/."));
}

int main(void)
{
    test_weight_to_shares();
    test_cpu_quota();
    test_swap_limits();
    test_cpu_period_and_cpuset_lists();
    test_blkio_weight_and_page_sizes();
    test_modes();
    test_mount_points();
    test_parent_names();
    CHECK_DONE();
}
