/*
 * topic_tree.c - the two level trees of the broker: the subscription tree
 * (filters -> subscribers) and the retained tree (topics -> the retained
 * message). What a valid name or filter is, how they split into levels and the
 * '$' rule are mqtt/topic.h's; this file only keeps the trees.
 *
 * Matching a published topic walks the subscription tree one level at a time,
 * following the exact child, the `+` child and the `#` child, so its cost
 * depends on the topic's depth and the wildcards in use, not on the number of
 * subscriptions. Children are kept sorted for a binary search. The `$` rule
 * (MQTT 4.7.2: wildcards in the first level never match topics starting with
 * `$`, hd_mqtt_wildcard_may_match) is applied at the root. Empty nodes are
 * pruned on removal. The walks must agree with hd_mqtt_filter_matches (the
 * broker unit test checks the tree against it).
 */
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "base/util.h"

static int level_cmp(const char *a, uint32_t alen, const char *b, uint32_t blen)
{
    if (alen != blen)
        return alen < blen ? -1 : 1;
    return memcmp(a, b, alen);
}

/* Binary search; returns the child or NULL and the insertion index. */
__attribute__((nonnull)) /* so &n->plus is never NULL: the analyzer thought it could be */
static struct topic_node **
wildcard_slot(struct topic_node *n, const char *level, uint32_t len)
{
    switch (hd_mqtt_level_kind_of(level, len)) {
    case HD_MQTT_LEVEL_PLUS: return &n->plus;
    case HD_MQTT_LEVEL_HASH: return &n->hash;
    default: return NULL;
    }
}

static struct topic_node *child_find(struct topic_node *n, const char *level, uint32_t len, uint32_t *at)
{
    struct topic_node **wild = wildcard_slot(n, level, len);
    if (wild)
        return *wild;
    uint32_t lo = 0, hi = n->n_children;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        int c = level_cmp(n->children[mid]->level, n->children[mid]->level_len, level, len);
        if (c == 0) {
            if (at)
                *at = mid;
            return n->children[mid];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (at)
        *at = lo;
    return NULL;
}

static struct topic_node *child_get(struct topic_node *n, const char *level, uint32_t len)
{
    uint32_t at;
    struct topic_node *c = child_find(n, level, len, &at);
    if (c)
        return c;
    c = hd_xcalloc(1, sizeof(*c));
    c->level = hd_xmalloc(len + 1);
    memcpy(c->level, level, len);
    c->level[len] = '\0';
    c->level_len = len;
    c->parent = n;
    struct topic_node **wild = wildcard_slot(n, level, len);
    if (wild) {
        *wild = c;
        return c;
    }
    if (n->n_children == n->cap_children) {
        n->cap_children = n->cap_children ? n->cap_children * 2 : 4;
        n->children = hd_xrealloc(n->children, n->cap_children * sizeof(*n->children));
    }
    memmove(n->children + at + 1, n->children + at, (n->n_children - at) * sizeof(*n->children));
    n->children[at] = c;
    n->n_children++;
    return c;
}

/* Walk (creating) the node for a topic or filter. */
static struct topic_node *node_for(struct topic_node *root, const char *path, bool create)
{
    struct topic_node *n = root;
    for (struct hd_mqtt_level l = hd_mqtt_level_first(path);; l = hd_mqtt_level_next(&l)) {
        n = create ? child_get(n, l.start, (uint32_t)l.len) : child_find(n, l.start, (uint32_t)l.len, NULL);
        if (!n || l.last)
            return n;
    }
}

static void node_free(struct topic_node *n)
{
    free(n->level);
    free(n->children);
    free(n->subs);
    for (uint32_t i = 0; i < n->n_shares; i++) {
        free(n->shares[i].name);
        free(n->shares[i].subs);
    }
    free(n->shares);
    free(n);
}

static void node_prune(struct topic_node *n)
{
    while (n->parent && n->n_children == 0 && !n->plus && !n->hash && n->n_subs == 0 && n->n_shares == 0 &&
           !n->retained) {
        struct topic_node *p = n->parent;
        uint32_t at;
        struct topic_node **wild = wildcard_slot(p, n->level, n->level_len);
        if (wild) {
            *wild = NULL;
        } else if (child_find(p, n->level, n->level_len, &at) == n) {
            memmove(p->children + at, p->children + at + 1, (p->n_children - at - 1) * sizeof(*p->children));
            p->n_children--;
        }
        node_free(n);
        n = p;
    }
}

static int subs_put(struct topic_sub **subs, uint32_t *n, uint32_t *cap, struct broker_session *s, uint8_t options,
                    uint32_t sub_id, bool *existed)
{
    for (uint32_t i = 0; i < *n; i++) {
        if ((*subs)[i].session == s) {
            (*subs)[i].options = options;
            (*subs)[i].sub_id = sub_id;
            *existed = true;
            return 0;
        }
    }
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 2;
        *subs = hd_xrealloc(*subs, *cap * sizeof(**subs));
    }
    (*subs)[(*n)++] = (struct topic_sub){s, sub_id, options};
    *existed = false;
    return 0;
}

static bool subs_del(struct topic_sub *subs, uint32_t *n, struct broker_session *s)
{
    for (uint32_t i = 0; i < *n; i++) {
        if (subs[i].session == s) {
            subs[i] = subs[--*n];
            return true;
        }
    }
    return false;
}

int broker_tree_subscribe(struct topic_node *root, const char *filter, const char *group, struct broker_session *s,
                          uint8_t options, uint32_t sub_id, bool *existed)
{
    struct topic_node *n = node_for(root, filter, true);
    if (!group)
        return subs_put(&n->subs, &n->n_subs, &n->cap_subs, s, options, sub_id, existed);
    struct share_group *g = NULL;
    for (uint32_t i = 0; i < n->n_shares; i++)
        if (strcmp(n->shares[i].name, group) == 0)
            g = &n->shares[i];
    if (!g) {
        n->shares = hd_xrealloc(n->shares, (n->n_shares + 1) * sizeof(*n->shares));
        g = &n->shares[n->n_shares++];
        *g = (struct share_group){.name = hd_xstrdup(group)};
    }
    return subs_put(&g->subs, &g->n_subs, &g->cap_subs, s, options, sub_id, existed);
}

bool broker_tree_unsubscribe(struct topic_node *root, const char *filter, const char *group, struct broker_session *s)
{
    struct topic_node *n = node_for(root, filter, false);
    if (!n)
        return false;
    bool found = false;
    if (!group) {
        found = subs_del(n->subs, &n->n_subs, s);
    } else {
        for (uint32_t i = 0; i < n->n_shares; i++) {
            struct share_group *g = &n->shares[i];
            if (strcmp(g->name, group) != 0)
                continue;
            found = subs_del(g->subs, &g->n_subs, s);
            if (g->n_subs == 0) {
                free(g->name);
                free(g->subs);
                n->shares[i] = n->shares[--n->n_shares];
            }
            break;
        }
    }
    node_prune(n);
    return found;
}

static void emit_node(struct topic_node *n, broker_match_fn fn, void *ctx)
{
    for (uint32_t i = 0; i < n->n_subs; i++)
        fn(ctx, n->subs[i].session, n->subs[i].options, n->subs[i].sub_id);
    for (uint32_t i = 0; i < n->n_shares; i++) {
        struct share_group *g = &n->shares[i];
        if (!g->n_subs)
            continue;
        /* round robin, preferring a member that is online */
        uint32_t pick = g->next % g->n_subs;
        for (uint32_t k = 0; k < g->n_subs; k++) {
            uint32_t j = (g->next + k) % g->n_subs;
            if (g->subs[j].session->conn) {
                pick = j;
                break;
            }
        }
        g->next = pick + 1;
        fn(ctx, g->subs[pick].session, g->subs[pick].options, g->subs[pick].sub_id);
    }
}

/* Match the topic's levels from `level` on (NULL: the topic is used up) below node n. */
static void match_walk(struct topic_node *n, const struct hd_mqtt_level *level, bool wild_ok, broker_match_fn fn,
                       void *ctx)
{
    if (!level) {
        emit_node(n, fn, ctx);
        if (n->hash) /* "a/#" also matches "a" */
            emit_node(n->hash, fn, ctx);
        return;
    }
    struct hd_mqtt_level next_level;
    const struct hd_mqtt_level *next = NULL;
    if (!level->last) {
        next_level = hd_mqtt_level_next(level);
        next = &next_level;
    }
    if (wild_ok) {
        if (n->hash)
            emit_node(n->hash, fn, ctx);
        if (n->plus)
            match_walk(n->plus, next, true, fn, ctx);
    }
    struct topic_node *c = child_find(n, level->start, (uint32_t)level->len, NULL);
    if (c)
        match_walk(c, next, true, fn, ctx);
}

void broker_tree_match(struct topic_node *root, const char *topic, broker_match_fn fn, void *ctx)
{
    struct hd_mqtt_level first = hd_mqtt_level_first(topic);
    match_walk(root, &first, hd_mqtt_wildcard_may_match(topic), fn, ctx);
}

void broker_retain_set(struct hd_broker *b, const char *topic, struct broker_msg *msg)
{
    bool clear = !msg || msg->payload_len == 0;
    struct topic_node *n = node_for(&b->retained_root, topic, !clear);
    if (!n)
        return;
    if (n->retained) {
        broker_msg_unref(n->retained);
        n->retained = NULL;
        b->retained_count--;
    }
    if (!clear) {
        n->retained = broker_msg_hold(msg);
        b->retained_count++;
    } else {
        node_prune(n);
    }
}

struct retain_walk {
    struct hd_broker *b;
    broker_retain_fn fn;
    void *ctx;
    uint64_t now;
};

static void retain_emit(struct retain_walk *w, struct topic_node *n)
{
    if (n->retained && !broker_msg_expired(n->retained, w->now))
        w->fn(w->ctx, n->retained);
}

static void retain_all(struct retain_walk *w, struct topic_node *n, bool skip_dollar)
{
    retain_emit(w, n);
    for (uint32_t i = 0; i < n->n_children; i++) {
        if (skip_dollar && !hd_mqtt_wildcard_may_match(n->children[i]->level))
            continue;
        retain_all(w, n->children[i], false);
    }
}

/* Walk the retained topics matching the filter's levels from `level` on (NULL: the filter is used up). */
static void retain_walk(struct retain_walk *w, struct topic_node *n, const struct hd_mqtt_level *level, bool first)
{
    if (!level) {
        retain_emit(w, n);
        return;
    }
    struct hd_mqtt_level next_level;
    const struct hd_mqtt_level *next = NULL;
    if (!level->last) {
        next_level = hd_mqtt_level_next(level);
        next = &next_level;
    }
    if (level->kind == HD_MQTT_LEVEL_HASH) {
        if (!first)
            retain_emit(w, n); /* "a/#" also matches "a" */
        for (uint32_t i = 0; i < n->n_children; i++)
            if (!first || hd_mqtt_wildcard_may_match(n->children[i]->level))
                retain_all(w, n->children[i], false);
        return;
    }
    if (level->kind == HD_MQTT_LEVEL_PLUS) {
        for (uint32_t i = 0; i < n->n_children; i++)
            if (!first || hd_mqtt_wildcard_may_match(n->children[i]->level))
                retain_walk(w, n->children[i], next, false);
        return;
    }
    struct topic_node *c = child_find(n, level->start, (uint32_t)level->len, NULL);
    if (c)
        retain_walk(w, c, next, false);
}

void broker_retain_match(struct hd_broker *b, const char *filter, broker_retain_fn fn, void *ctx)
{
    struct retain_walk w = {b, fn, ctx, hd_now_ns()};
    struct hd_mqtt_level first = hd_mqtt_level_first(filter);
    retain_walk(&w, &b->retained_root, &first, true);
}

static void tree_free_node(struct topic_node *c);

static void tree_free_children(struct topic_node *n)
{
    for (uint32_t i = 0; i < n->n_children; i++)
        tree_free_node(n->children[i]);
    if (n->plus)
        tree_free_node(n->plus);
    if (n->hash)
        tree_free_node(n->hash);
}

static void tree_free_node(struct topic_node *c)
{
    tree_free_children(c);
    if (c->retained)
        broker_msg_unref(c->retained);
    node_free(c);
}

void broker_tree_free(struct topic_node *root)
{
    tree_free_children(root);
    free(root->children);
    free(root->subs);
    for (uint32_t i = 0; i < root->n_shares; i++) {
        free(root->shares[i].name);
        free(root->shares[i].subs);
    }
    free(root->shares);
    memset(root, 0, sizeof(*root));
}
