/*
 * archive_lazy.h - libarchive, loaded on first use.
 *
 * The shared libarchive pulls libxml2, ICU and libstdc++ into every process
 * that links it (for archive formats hedge never touches), which costs each
 * `hedge` invocation ~4 ms of dynamic loading. Only image import, bench images
 * and bundles need it, so hedge loads it with dlopen() when they run.
 *
 * Include this instead of <archive.h>: each libarchive function hedge uses is
 * a macro that calls through a table filled by hd_archive_load(), so call
 * sites read as plain libarchive calls and the compiler still checks every
 * call against libarchive's own prototypes (the table's types are taken from
 * them with __typeof__). Call hd_archive_load() before the first use.
 */
#ifndef HEDGE_ARCHIVE_LAZY_H
#define HEDGE_ARCHIVE_LAZY_H

#include <archive.h>
#include <archive_entry.h>

#include "base/error.h"

#define HD_ARCHIVE_FUNCTIONS(X) \
    X(archive_entry_filetype) \
    X(archive_entry_free) \
    X(archive_entry_hardlink) \
    X(archive_entry_new) \
    X(archive_entry_pathname) \
    X(archive_entry_set_filetype) \
    X(archive_entry_set_hardlink) \
    X(archive_entry_set_mtime) \
    X(archive_entry_set_pathname) \
    X(archive_entry_set_perm) \
    X(archive_entry_set_size) \
    X(archive_entry_size) \
    X(archive_entry_sourcepath) \
    X(archive_entry_symlink) \
    X(archive_entry_xattr_add_entry) \
    X(archive_entry_xattr_clear) \
    X(archive_entry_xattr_next) \
    X(archive_entry_xattr_reset) \
    X(archive_errno) \
    X(archive_error_string) \
    X(archive_read_data) \
    X(archive_read_data_block) \
    X(archive_read_disk_descend) \
    X(archive_read_disk_new) \
    X(archive_read_disk_open) \
    X(archive_read_disk_set_behavior) \
    X(archive_read_disk_set_standard_lookup) \
    X(archive_read_free) \
    X(archive_read_new) \
    X(archive_read_next_header) \
    X(archive_read_next_header2) \
    X(archive_read_open_filename) \
    X(archive_read_support_filter_all) \
    X(archive_read_support_format_raw) \
    X(archive_read_support_format_tar) \
    X(archive_write_close) \
    X(archive_write_data) \
    X(archive_write_data_block) \
    X(archive_write_disk_new) \
    X(archive_write_disk_set_options) \
    X(archive_write_disk_set_standard_lookup) \
    X(archive_write_finish_entry) \
    X(archive_write_free) \
    X(archive_write_header) \
    X(archive_write_new) \
    X(archive_write_open_filename) \
    X(archive_write_open_memory) \
    X(archive_write_set_bytes_in_last_block) \
    X(archive_write_set_format_pax_restricted)

struct hd_archive_api {
#define HD_ARCHIVE_MEMBER(name) __typeof__(&name) name;
    HD_ARCHIVE_FUNCTIONS(HD_ARCHIVE_MEMBER)
#undef HD_ARCHIVE_MEMBER
};

/* Load libarchive.so.13 (once per process). 0, or -1 with err naming what is missing. */
int hd_archive_load(hd_error_t *err);
/* The loaded table; hd_archive_load() must have succeeded before. */
extern struct hd_archive_api hd_archive;

#ifndef HD_ARCHIVE_NO_MACROS /* archive_lazy.c sees the real names */
#define archive_entry_filetype (hd_archive.archive_entry_filetype)
#define archive_entry_free (hd_archive.archive_entry_free)
#define archive_entry_hardlink (hd_archive.archive_entry_hardlink)
#define archive_entry_new (hd_archive.archive_entry_new)
#define archive_entry_pathname (hd_archive.archive_entry_pathname)
#define archive_entry_set_filetype (hd_archive.archive_entry_set_filetype)
#define archive_entry_set_hardlink (hd_archive.archive_entry_set_hardlink)
#define archive_entry_set_mtime (hd_archive.archive_entry_set_mtime)
#define archive_entry_set_pathname (hd_archive.archive_entry_set_pathname)
#define archive_entry_set_perm (hd_archive.archive_entry_set_perm)
#define archive_entry_set_size (hd_archive.archive_entry_set_size)
#define archive_entry_size (hd_archive.archive_entry_size)
#define archive_entry_sourcepath (hd_archive.archive_entry_sourcepath)
#define archive_entry_symlink (hd_archive.archive_entry_symlink)
#define archive_entry_xattr_add_entry (hd_archive.archive_entry_xattr_add_entry)
#define archive_entry_xattr_clear (hd_archive.archive_entry_xattr_clear)
#define archive_entry_xattr_next (hd_archive.archive_entry_xattr_next)
#define archive_entry_xattr_reset (hd_archive.archive_entry_xattr_reset)
#define archive_errno (hd_archive.archive_errno)
#define archive_error_string (hd_archive.archive_error_string)
#define archive_read_data (hd_archive.archive_read_data)
#define archive_read_data_block (hd_archive.archive_read_data_block)
#define archive_read_disk_descend (hd_archive.archive_read_disk_descend)
#define archive_read_disk_new (hd_archive.archive_read_disk_new)
#define archive_read_disk_open (hd_archive.archive_read_disk_open)
#define archive_read_disk_set_behavior (hd_archive.archive_read_disk_set_behavior)
#define archive_read_disk_set_standard_lookup (hd_archive.archive_read_disk_set_standard_lookup)
#define archive_read_free (hd_archive.archive_read_free)
#define archive_read_new (hd_archive.archive_read_new)
#define archive_read_next_header (hd_archive.archive_read_next_header)
#define archive_read_next_header2 (hd_archive.archive_read_next_header2)
#define archive_read_open_filename (hd_archive.archive_read_open_filename)
#define archive_read_support_filter_all (hd_archive.archive_read_support_filter_all)
#define archive_read_support_format_raw (hd_archive.archive_read_support_format_raw)
#define archive_read_support_format_tar (hd_archive.archive_read_support_format_tar)
#define archive_write_close (hd_archive.archive_write_close)
#define archive_write_data (hd_archive.archive_write_data)
#define archive_write_data_block (hd_archive.archive_write_data_block)
#define archive_write_disk_new (hd_archive.archive_write_disk_new)
#define archive_write_disk_set_options (hd_archive.archive_write_disk_set_options)
#define archive_write_disk_set_standard_lookup (hd_archive.archive_write_disk_set_standard_lookup)
#define archive_write_finish_entry (hd_archive.archive_write_finish_entry)
#define archive_write_free (hd_archive.archive_write_free)
#define archive_write_header (hd_archive.archive_write_header)
#define archive_write_new (hd_archive.archive_write_new)
#define archive_write_open_filename (hd_archive.archive_write_open_filename)
#define archive_write_open_memory (hd_archive.archive_write_open_memory)
#define archive_write_set_bytes_in_last_block (hd_archive.archive_write_set_bytes_in_last_block)
#define archive_write_set_format_pax_restricted (hd_archive.archive_write_set_format_pax_restricted)
#endif

#endif
