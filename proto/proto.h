/* SPDX-License-Identifier: MIT */
/*
 * The portbroker control protocol: message layout, encoders and decoders
 * shared by brokerd and libportbroker. Messages travel over AF_UNIX
 * SOCK_SEQPACKET, one message per packet, each at most PB_MSG_MAX bytes:
 * a 16-byte header followed by a per-type body, every field encoded
 * explicitly in network byte order. Nothing here logs, exits or keeps
 * state: functions write into caller buffers and return 0 / -errno.
 * The wire format is specified in proto/PROTOCOL.md.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "endpoint.h"

#define PB_PROTO_VERSION 6               /* the newest version spoken */
#define PB_PROTO_VERSION_MIN 2          /* the oldest still spoken (see proto_type_version()) */
#define PB_PROTO_VERSION_V6ONLY 4       /* the first with the IPv6-only wildcard (tcp6:[::]:P) and CHECK */
#define PB_PROTO_VERSION_UNIX 5         /* the first with Unix endpoints (unix:/path) */
#define PB_PROTO_VERSION_POLICY 6       /* the first with reservations, rule sources, policy imports,
                                         * POLICY_TEST and LOG */
#define PB_SOCKET_MODE_DEFAULT 0600     /* a Unix socket's mode when the rule gives none */
#define PB_MSG_MAX 4096
#define PB_HEADER_SIZE 16
#define PB_TEXT_MAX 255                 /* longest string field (unit, message) */
#define PB_LIST_MAX 32                  /* most leases in one status reply */
#define PB_RULES_MAX 12                 /* most rules in one policy list reply (fits 4 KiB) */
#define PB_TEST_GROUPS_MAX 64           /* most groups of the peer a POLICY_TEST describes */
#define PB_UID_NONE UINT32_MAX          /* no uid: POLICY_TEST's peer of no user (user rules never match
                                         * it), an event with no peer uid (brokerd's own, an unidentified peer) */
#define PB_EVENTS_MAX 16                /* most audit events in one log reply (pages end early to fit 4 KiB;
                                         * more would make struct pb_msg, on many stacks, twice as big) */
#define PB_EVENT_KIND_MAX 23            /* longest event kind ("policy-dir-failed") */

enum pb_msg_type {
        PB_MSG_GET = 1,
        PB_MSG_RELEASE = 2,
        PB_MSG_STATUS = 3,
        PB_MSG_POLICY_ADD = 4,
        PB_MSG_POLICY_REMOVE = 5,
        PB_MSG_POLICY_LIST = 6,
        PB_MSG_REEXEC = 7,              /* admin: brokerd executes its binary again, sockets kept */
        PB_MSG_INFO = 8,                /* brokerd's pid, version and bind guard (since version 3) */
        PB_MSG_CHECK = 9,               /* may the peer get an endpoint? nothing bound (since version 4) */
        PB_MSG_LOG = 10,                /* audit events, newest first (since version 6) */
        PB_MSG_POLICY_TEST = 11,        /* may a peer described get an endpoint? why? (since version 6) */
        PB_MSG_POLICY_BEGIN = 12,       /* admin: the POLICY_ADDs that follow are one import (since 6) */
        PB_MSG_POLICY_COMMIT = 13,      /* admin: apply the import, in one transaction (since 6) */
        PB_MSG_REPLY = 0x8000,          /* flag: reply to the request type in the low bits */
        PB_MSG_ERROR = 0xFFFF,          /* error reply to any request */
};

struct pb_header {
        uint32_t length;                /* whole message, header included */
        uint16_t version;               /* PB_PROTO_VERSION */
        uint16_t type;                  /* enum pb_msg_type */
        uint32_t id;                    /* request id, echoed in the reply */
        uint32_t reserved;              /* must be 0 */
};

enum pb_wire_principal_kind {
        PB_PRINCIPAL_USER = 1,
        PB_PRINCIPAL_GROUP = 2,
        PB_PRINCIPAL_UNIT = 3,
};

struct pb_principal {
        uint8_t kind;                   /* enum pb_wire_principal_kind */
        uint32_t id;                    /* uid or gid; 0 for units */
        char unit[PB_TEXT_MAX + 1];     /* unit name for PB_PRINCIPAL_UNIT, else "" */
};

/* The group and mode a rule gives the Unix sockets it allows (their owner
 * is the lease's owner): on the wire only after a Unix pattern. */
#define PB_SOCKET_GROUP_NONE UINT32_MAX /* no group named: the file keeps brokerd's */

struct pb_socket_perm {
        uint32_t gid;                   /* PB_SOCKET_GROUP_NONE unless the rule names a group */
        uint16_t mode;                  /* permission bits, at most 0777 */
};

/* What a rule says besides who may get what (version 6): whether brokerd
 * binds its endpoint at start, before anyone asks, and for whom. */
#define PB_RULE_RESERVE 0x01            /* flags: the pattern, one endpoint, is leased at start */
#define PB_RULE_OWNER 0x02              /* flags: owner names the reservation's owner (a group or
                                         * unit rule's; a user rule's is its user) */
#define PB_RULE_SOURCE_MAX 64           /* longest source: the policy.d file a rule comes from */
#define PB_POLICY_REPLACE 0x01          /* POLICY_BEGIN flags: the import removes the rules it does not name */

struct pb_rule_attrs {
        uint8_t flags;                  /* PB_RULE_RESERVE, PB_RULE_OWNER, or 0 */
        uint32_t owner;                 /* with PB_RULE_OWNER: a uid; else 0 */
};

/* One message body; which member is valid follows from the header's type. */
struct pb_msg {
        struct pb_header hdr;
        union {
                struct {                        /* PB_MSG_GET, PB_MSG_RELEASE, PB_MSG_CHECK */
                        struct pb_endpoint endpoint;
                } get;
                struct {                        /* PB_MSG_GET | PB_MSG_REPLY; one fd attached */
                        struct pb_endpoint endpoint;
                        uint64_t lease_id;
                        uint8_t created;        /* 1 when this get created the lease */
                } got;
                struct {                        /* PB_MSG_STATUS */
                        uint8_t has_endpoint;   /* 0: all leases */
                        struct pb_endpoint endpoint;
                        uint64_t after_id;      /* list leases with id > after_id */
                } status;
                struct pb_lease_list {          /* PB_MSG_STATUS | PB_MSG_REPLY */
                        uint8_t count;
                        uint8_t more;           /* 1: ask again with after_id = last id */
                        struct pb_lease_entry {
                                uint64_t id;
                                struct pb_endpoint endpoint;
                                uint32_t owner_uid;
                                uint64_t since;         /* unix seconds */
                                uint64_t handouts;      /* gets served since broker start */
                                uint32_t holders;       /* live processes that got it */
                                int32_t queued;         /* connections in accept queue, -1 unknown */
                                uint32_t backlog;       /* accept queue limit, 0 for UDP */
                                uint8_t bound;          /* 1 when the broker holds a socket */
                        } leases[PB_LIST_MAX];
                } leases;
                struct {                        /* PB_MSG_POLICY_ADD */
                        struct pb_principal principal;
                        struct pb_endpoint pattern;     /* port_lo..port_hi range allowed */
                        struct pb_socket_perm perm;     /* Unix patterns only */
                        struct pb_rule_attrs attrs;     /* version 6 */
                } policy_add;
                struct {                        /* PB_MSG_POLICY_ADD | PB_MSG_REPLY, _REMOVE request */
                        uint64_t rule_id;
                } rule_id;
                struct {                        /* PB_MSG_POLICY_LIST */
                        uint64_t after_id;
                } policy_list;
                struct pb_rule_list {           /* PB_MSG_POLICY_LIST | PB_MSG_REPLY */
                        uint8_t count;
                        uint8_t more;
                        struct pb_rule_entry {
                                uint64_t id;
                                struct pb_principal principal;
                                struct pb_endpoint pattern;
                                struct pb_socket_perm perm;     /* Unix patterns only */
                                struct pb_rule_attrs attrs;     /* version 6 */
                                char source[PB_RULE_SOURCE_MAX + 1]; /* version 6: the policy.d file it
                                                                      * comes from, "" for portctl's */
                                uint64_t created;       /* unix seconds */
                        } rules[PB_RULES_MAX];
                } rules;
                struct {                        /* PB_MSG_POLICY_BEGIN */
                        uint8_t flags;          /* PB_POLICY_REPLACE, or 0 */
                } policy_begin;
                struct {                        /* PB_MSG_POLICY_COMMIT | PB_MSG_REPLY */
                        uint32_t added, changed, removed;
                } policy_commit;
                struct {                        /* PB_MSG_POLICY_TEST: a peer that is not the sender */
                        struct pb_endpoint endpoint;    /* no range; a Unix one allowed */
                        uint32_t uid;                   /* PB_UID_NONE: no user */
                        uint8_t n_groups;               /* 0..PB_TEST_GROUPS_MAX */
                        uint32_t groups[PB_TEST_GROUPS_MAX]; /* its primary and supplementary groups */
                        char unit[PB_TEXT_MAX + 1];     /* its systemd unit, "" for none */
                } policy_test;
                struct pb_test_verdict {        /* PB_MSG_POLICY_TEST | PB_MSG_REPLY */
                        uint8_t allowed;                /* 1: a GET by that peer would be granted now */
                        uint8_t admin;                  /* 1: an admin, and no rule names it */
                        struct pb_rule_entry rule;      /* the rule that lets it, id 0: none */
                        uint64_t lease_id;              /* the lease a GET would meet, 0: none */
                        uint32_t owner_uid;             /* that lease's owner; 0 without one */
                        char reason[PB_TEXT_MAX + 1];   /* why, one line */
                } policy_tested;
                struct {                        /* PB_MSG_LOG */
                        uint64_t before_id;     /* events with id < before_id; 0: from the newest */
                        uint64_t since, until;  /* µs since the epoch, inclusive; 0: no bound */
                        uint8_t limit;          /* most entries in the reply, <= PB_EVENTS_MAX; 0: as many as fit */
                        uint8_t has_uid;        /* 0: any uid's (an admin's request) */
                        uint32_t uid;
                        uint8_t has_endpoint;   /* 0: any endpoint */
                        struct pb_endpoint endpoint; /* a pattern: its text as an endpoint and as a pattern match */
                        char event[PB_EVENT_KIND_MAX + 1]; /* a kind (proto_event_kinds), "" any */
                } log;
                struct pb_event_list {          /* PB_MSG_LOG | PB_MSG_REPLY */
                        uint8_t count;
                        uint8_t more;           /* 1: ask again with before_id = next_id */
                        uint64_t next_id;       /* more = 1: below the request's before_id; else 0 */
                        struct pb_event_entry {
                                uint64_t id;            /* descending within a page */
                                uint64_t time;          /* µs since the epoch */
                                uint32_t uid;           /* the peer's, PB_UID_NONE: none */
                                uint32_t pid;           /* the peer's, 0: none */
                                char event[PB_EVENT_KIND_MAX + 1];     /* its kind, never "" */
                                char endpoint[PB_ENDPOINT_STRLEN];      /* endpoint or pattern text, "" none */
                                char detail[PB_TEXT_MAX + 1];           /* e.g. why a denial, "" none */
                        } events[PB_EVENTS_MAX];
                } events;
                struct {                        /* PB_MSG_REEXEC | PB_MSG_REPLY, from the new image */
                        uint32_t pid;           /* brokerd's pid (the same before and after) */
                        char version[PB_TEXT_MAX + 1]; /* the new image's version */
                } reexec;
                struct {                        /* PB_MSG_INFO | PB_MSG_REPLY */
                        uint32_t pid;
                        char version[PB_TEXT_MAX + 1];  /* brokerd's version */
                        uint8_t guard;                  /* 1: the bind guard is on */
                        char guard_state[PB_TEXT_MAX + 1]; /* where it guards, or why it is off */
                } info;
                struct {                        /* PB_MSG_ERROR */
                        int32_t code;           /* positive errno value */
                        char message[PB_TEXT_MAX + 1];
                } error;
        };
};

/* The protocol version a message of type is sent with when its header
 * does not say (hdr.version 0): the oldest that has the type, so that an
 * older brokerd understands every request it can. */
uint16_t proto_type_version(uint16_t type);

/* The oldest version msg can be sent with: its type's, or newer when a
 * field needs it (an IPv6-only wildcard endpoint: 4; a Unix one: 5). */
uint16_t proto_msg_version(const struct pb_msg *msg);

/* Encodes msg into buf (at least PB_MSG_MAX bytes) with version
 * msg->hdr.version when it is one that has the type and the fields, else
 * proto_msg_version(); returns the length or -errno. */
int proto_encode(const struct pb_msg *msg, uint8_t *buf, size_t size);

/* Decodes one received message of len bytes into ret_msg: checks size, header,
 * version (PB_PROTO_VERSION_MIN..PB_PROTO_VERSION, and no older than the
 * type: else -EPROTO), type, the exact per-type length and the fields
 * under that version's rules (-EBADMSG). Returns 0 or -EBADMSG/-EPROTO. */
int proto_decode(const uint8_t *buf, size_t len, struct pb_msg *ret_msg);

/* Decodes only the header (for error replies to undecodable requests). */
int proto_decode_header(const uint8_t *buf, size_t len, struct pb_header *ret_hdr);

/* True when a message of this type may carry an fd (only the GET reply). */
bool proto_type_carries_fd(uint16_t type);

/* Sets msg up as an error reply to request id with code and printf-style text. */
void proto_set_error(struct pb_msg *msg, uint32_t id, int code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* The oldest version that can carry endpoint e: 5 for Unix, 4 for the
 * IPv6-only wildcard, else 0 (any). */
uint16_t proto_endpoint_version(const struct pb_endpoint *e);

/* Validates a principal (kind known, unit name well-formed). Returns 0 or -EINVAL. */
int proto_principal_validate(const struct pb_principal *p);

/* Validates what a rule says beyond its principal and pattern: known
 * flags; a reservation's pattern one endpoint (a single port, a Unix
 * socket's path rather than a directory); an owner only for the
 * reservation of a group or unit rule, which needs one. Returns 0, or
 * -EINVAL with *ret_why (static text) saying what is wrong. */
int proto_rule_attrs_validate(const struct pb_principal *p, const struct pb_endpoint *pattern,
                              const struct pb_rule_attrs *a, const char **ret_why);

/* The kinds of audit event brokerd records, NULL-terminated: what a LOG
 * request may ask for. */
extern const char *const proto_event_kinds[];

/* Whether s is one of proto_event_kinds. */
bool proto_event_kind_known(const char *s);

/* Copies src into dst (size bytes, at least 1) as a text field may carry
 * it: cut to fit, each control character (and DEL) replaced with '?'.
 * Returns dst. */
char *proto_text_copy(char *dst, size_t size, const char *src);
