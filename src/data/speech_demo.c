/* `supair_data speech-demo`: a speech corpus anyone can make on Debian.
 *
 * Sentences come from the text already on the machine (the licence texts in
 * /usr/share/common-licenses, then /usr/share/doc/ * /copyright, in sorted
 * order), spoken by 12 voices (espeak-ng en+m1..m7, en+f1..f4 and festival's
 * kal diphone voice: speakers = voices), converted by sox to 16 kHz 16-bit
 * NIST SPHERE files in a TIMIT-shaped tree, WORK/timit/TRAIN|TEST/DR1/VOICE/
 * SNNNNN.WAV (+ .TXT), and then converted by the TIMIT code path. Three
 * voices are test speakers, as TIMIT's test speakers are disjoint from the
 * training ones. Synthesis runs as parallel shell jobs (one per CPU).
 * espeak-ng, festival and sox (with -D -R: no dither, repeatable) are
 * deterministic, so the same seed and minutes give the same corpus. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "supair/audio.h"
#include "supair/speech.h"

extern char **environ;

#define MARKER "SPEECH_DEMO_WORK"
#define MIN_WORDS 4
#define MAX_WORDS 22
#define PIECE_WORDS 14
#define MAX_TEXT_BYTES (1 << 20)
/* Utterances per espeak-ng job script: enough to amortise the shell, few
 * enough that the jobs balance over the CPUs. */
#define ESPEAK_PER_JOB 16

typedef struct voice {
    const char *dir;  /* speaker directory name */
    const char *name; /* espeak-ng voice, or NULL for festival kal */
    int wpm;          /* espeak-ng speed */
    int test;         /* a test speaker */
} voice;

static const voice voices[] = {
    {"ESPEAK_M1", "en+m1", 165, 0}, {"ESPEAK_M2", "en+m2", 175, 0}, {"ESPEAK_M3", "en+m3", 155, 0},
    {"ESPEAK_M4", "en+m4", 170, 0}, {"ESPEAK_M5", "en+m5", 160, 0}, {"ESPEAK_M6", "en+m6", 175, 1},
    {"ESPEAK_M7", "en+m7", 165, 1}, {"ESPEAK_F1", "en+f1", 160, 0}, {"ESPEAK_F2", "en+f2", 170, 0},
    {"ESPEAK_F3", "en+f3", 155, 0}, {"ESPEAK_F4", "en+f4", 165, 1}, {"FESTIVAL_KAL", NULL, 0, 0},
};
#define N_VOICES ((int)(sizeof voices / sizeof voices[0]))

void sp_speech_demo_opts_default(sp_speech_demo_opts *o) {
    memset(o, 0, sizeof *o);
    o->minutes = 30;
    o->streams = 64;
}

/* ---- sentences from the machine's text ---- */

typedef struct textsrc {
    char **paths;
    long n, next;
    char *buf; /* current file's contents */
    long len, pos;
    uint64_t *seen; /* open-addressing set of sentence hashes (dedup) */
    long seen_cap, seen_n;
    char pending[4096]; /* a long sentence being cut into pieces */
    long pending_pos;   /* < 0: none */
} textsrc;

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int push_path(textsrc *t, long *cap, const char *p) {
    if (t->n == *cap) {
        long c = *cap ? 2 * *cap : 256;
        char **v = realloc(t->paths, (size_t)c * sizeof *v);
        if (!v) return -1;
        t->paths = v;
        *cap = c;
    }
    t->paths[t->n] = strdup(p);
    return t->paths[t->n++] ? 0 : -1;
}

/* Regular files of dir (symlinks skipped: Debian's GPL -> GPL-3 would repeat
 * text), or dir/ * /name when name is set; sorted. */
static int list_texts(textsrc *t, long *cap, const char *dir, const char *name) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    long first = t->n;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[4096];
        if (name)
            snprintf(p, sizeof p, "%s/%s/%s", dir, e->d_name, name);
        else
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (push_path(t, cap, p)) {
            closedir(d);
            return -1;
        }
    }
    closedir(d);
    qsort(t->paths + first, (size_t)(t->n - first), sizeof *t->paths, cmp_str);
    return 0;
}

static int textsrc_init(textsrc *t) {
    memset(t, 0, sizeof *t);
    t->pending_pos = -1;
    long cap = 0;
    if (list_texts(t, &cap, "/usr/share/common-licenses", NULL) ||
        list_texts(t, &cap, "/usr/share/doc", "copyright"))
        return -1;
    t->seen_cap = 1 << 16;
    t->seen = calloc((size_t)t->seen_cap, sizeof *t->seen);
    return t->seen ? 0 : -1;
}

static void textsrc_free(textsrc *t) {
    for (long i = 0; i < t->n; i++) free(t->paths[i]);
    free(t->paths);
    free(t->buf);
    free(t->seen);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h ? h : 1;
}

/* 1 when s was new (and is now remembered). */
static int seen_insert(textsrc *t, const char *s) {
    if (2 * (t->seen_n + 1) > t->seen_cap) {
        long nc = 2 * t->seen_cap;
        uint64_t *ns = calloc((size_t)nc, sizeof *ns);
        if (!ns) return 1;
        for (long i = 0; i < t->seen_cap; i++) {
            if (!t->seen[i]) continue;
            long k = (long)(t->seen[i] & (uint64_t)(nc - 1));
            while (ns[k]) k = (k + 1) & (nc - 1);
            ns[k] = t->seen[i];
        }
        free(t->seen);
        t->seen = ns;
        t->seen_cap = nc;
    }
    uint64_t h = fnv1a(s);
    long k = (long)(h & (uint64_t)(t->seen_cap - 1));
    while (t->seen[k]) {
        if (t->seen[k] == h) return 0;
        k = (k + 1) & (t->seen_cap - 1);
    }
    t->seen[k] = h;
    t->seen_n++;
    return 1;
}

static int load_next_file(textsrc *t) {
    while (t->next < t->n) {
        FILE *f = fopen(t->paths[t->next++], "rb");
        if (!f) continue;
        free(t->buf);
        t->buf = malloc(MAX_TEXT_BYTES + 1);
        t->len = t->buf ? (long)fread(t->buf, 1, MAX_TEXT_BYTES, f) : 0;
        fclose(f);
        t->pos = 0;
        if (t->len > 0) return 1;
    }
    return 0;
}

static int count_words(const char *s) {
    int n = 0, in = 0;
    for (; *s; s++) {
        if (*s == ' ')
            in = 0;
        else if (!in) {
            in = 1;
            n++;
        }
    }
    return n;
}

/* Raw sentence -> speakable lower-case text: letters, digits, spaces and
 * ",'-" kept, everything else a space. 0 when it is not prose. */
static int clean_sentence(const char *raw, long n, char *out, long cap) {
    long k = 0, letters = 0, others = 0;
    int space = 1;
    for (long i = 0; i < n && k < cap - 1; i++) {
        unsigned char c = (unsigned char)raw[i];
        if (isalpha(c)) {
            out[k++] = (char)tolower(c);
            letters++;
            space = 0;
        } else if (isdigit(c) || c == ',' || c == '\'' || c == '-') {
            if (space && c != '\'' && c != '-' && !isdigit(c)) continue;
            out[k++] = (char)c;
            others++;
            space = 0;
        } else if (!space) {
            out[k++] = ' ';
            space = 1;
        } else if (!isspace(c)) {
            others++;
        }
    }
    while (k > 0 && (out[k - 1] == ' ' || out[k - 1] == ',' || out[k - 1] == '-')) k--;
    out[k] = '\0';
    return letters >= 12 && letters * 4 >= 3 * (letters + others);
}

/* The next sentence (at most MAX_WORDS words; longer ones are cut into
 * PIECE_WORDS-word pieces), or 0 when the text runs out. */
static int next_sentence(textsrc *t, char *out, long cap) {
    char *pending = t->pending;
    long pending_pos = t->pending_pos;
    for (;;) {
        t->pending_pos = pending_pos;
        if (pending_pos >= 0) {
            /* Emit the next piece of a long sentence. */
            char *s = pending + pending_pos;
            while (*s == ' ') s++;
            if (!*s) {
                pending_pos = -1;
                continue;
            }
            int words = 0;
            char *e = s;
            while (*e && words < PIECE_WORDS) {
                while (*e == ' ') e++;
                if (!*e) break;
                while (*e && *e != ' ') e++;
                words++;
            }
            pending_pos = e - pending;
            long n = e - s;
            if (count_words(e) < MIN_WORDS) { /* short tail: keep with this piece */
                n = (long)strlen(s);
                pending_pos = -1;
            }
            if (n >= cap) n = cap - 1;
            memcpy(out, s, (size_t)n);
            out[n] = '\0';
            while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == ',')) out[--n] = '\0';
            if (count_words(out) >= MIN_WORDS && seen_insert(t, out)) {
                t->pending_pos = pending_pos;
                return 1;
            }
            continue;
        }
        if (t->pos >= t->len && !load_next_file(t)) return 0;
        /* A sentence ends at . ! ? ; : or a blank line (headings, lists). */
        long b = t->pos;
        while (t->pos < t->len) {
            char c = t->buf[t->pos];
            if (strchr(".!?;:", c)) break;
            if (c == '\n' && t->pos + 1 < t->len && t->buf[t->pos + 1] == '\n') break;
            t->pos++;
        }
        long e = t->pos;
        t->pos++;
        if (!clean_sentence(t->buf + b, e - b, pending, sizeof t->pending)) continue;
        int words = count_words(pending);
        if (words < MIN_WORDS) continue;
        if (words <= MAX_WORDS) {
            if (!seen_insert(t, pending)) continue;
            long n = (long)strlen(pending);
            if (n >= cap) n = cap - 1;
            memcpy(out, pending, (size_t)n);
            out[n] = '\0';
            return 1;
        }
        pending_pos = 0;
    }
}

/* ---- work directory ---- */

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int rm_tree(const char *p) {
    struct stat st;
    if (lstat(p, &st) != 0) return 0;
    return nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int mkdirs(const char *path) {
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
        *s = '/';
    }
    return mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    int e = fputs(text, f) < 0;
    e |= fclose(f) != 0;
    return e ? -1 : 0;
}

static int append_newline(const char *path) {
    FILE *f = fopen(path, "a");
    if (!f) return -1;
    int e = fputc('\n', f) == EOF;
    e |= fclose(f) != 0;
    return e ? -1 : 0;
}

/* Prepares WORK: a new directory, or one this command made before (it holds
 * the marker file), whose timit/ and tmp/ are cleared. */
static int prepare_work(const char *work, sp_error *err) {
    char p[4096];
    struct stat st;
    if (stat(work, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return sp_fail(err, SP_EINPUT, "%s: not a directory", work);
        snprintf(p, sizeof p, "%s/%s", work, MARKER);
        int empty = 1;
        DIR *d = opendir(work);
        struct dirent *e;
        while (d && (e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
        if (d) closedir(d);
        if (!empty && access(p, F_OK) != 0)
            return sp_fail(err, SP_EINPUT,
                           "%s: not empty and not a speech-demo work directory (no %s file)", work,
                           MARKER);
    } else if (mkdirs(work) != 0) {
        return sp_fail(err, SP_EINPUT, "%s: cannot create: %s", work, strerror(errno));
    }
    snprintf(p, sizeof p, "%s/%s", work, MARKER);
    if (write_text(p, "made by supair_data speech-demo; its timit/ and tmp/ are replaced\n"))
        return sp_fail(err, SP_EINPUT, "%s: cannot write: %s", p, strerror(errno));
    static const char *subs[] = {"timit", "tmp"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", work, subs[i]);
        if (rm_tree(p) != 0)
            return sp_fail(err, SP_ERUNTIME, "%s: cannot remove: %s", p, strerror(errno));
    }
    return SP_OK;
}

/* ---- utterances and synthesis jobs ---- */

typedef struct utt {
    char *text;
    int voice;
    double secs; /* measured after synthesis */
    int done;
} utt;

typedef struct job {
    char script[4096], log[4096];
    pid_t pid;
} job;

static void utt_paths(const char *work, const utt *u, long k, char *wav, char *txt, size_t cap) {
    const voice *v = &voices[u->voice];
    snprintf(wav, cap, "%s/timit/%s/DR1/%s/S%05ld.WAV", work, v->test ? "TEST" : "TRAIN", v->dir,
             k);
    snprintf(txt, cap, "%s/timit/%s/DR1/%s/S%05ld.TXT", work, v->test ? "TEST" : "TRAIN", v->dir,
             k);
}

static int spawn_job(job *j, sp_error *err) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, j->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    char *argv[] = {"/bin/sh", j->script, NULL};
    int e = posix_spawn(&j->pid, "/bin/sh", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e) return sp_fail(err, SP_ERUNTIME, "%s: cannot start /bin/sh: %s", j->script, strerror(e));
    return SP_OK;
}

/* Runs the jobs, at most `par` at a time; the first failure or a stop ends
 * the others (only the processes started here). */
static int run_jobs(job *jobs, int n, int par, long *units_done, const long *units, long total,
                    const sp_speech_demo_opts *o, sp_error *err) {
    int next = 0, running = 0, rc = SP_OK;
    while ((next < n && !rc) || running > 0) {
        while (!rc && next < n && running < par) {
            rc = spawn_job(&jobs[next], err);
            if (!rc) {
                running++;
                next++;
            }
        }
        int status;
        pid_t p = waitpid(-1, &status, 0);
        if (p < 0) {
            if (errno == EINTR) {
                if (o->stop && *o->stop && !rc) {
                    rc = sp_fail(err, SP_ESTOPPED, "interrupted; no file written");
                    for (int i = 0; i < next; i++)
                        if (jobs[i].pid > 0) kill(jobs[i].pid, SIGTERM);
                }
                continue;
            }
            break;
        }
        for (int i = 0; i < next; i++) {
            if (jobs[i].pid != p) continue;
            jobs[i].pid = 0;
            running--;
            int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
            if (!ok && !rc && o->stop && *o->stop) {
                rc = sp_fail(err, SP_ESTOPPED, "interrupted; no file written");
                for (int k = 0; k < next; k++)
                    if (jobs[k].pid > 0) kill(jobs[k].pid, SIGTERM);
            } else if (!ok && !rc) {
                rc = sp_fail(err, SP_ERUNTIME,
                             "synthesis job %s failed (status %d; its output is in %s; are "
                             "festival festvox-kallpc16k espeak-ng sox installed?)",
                             jobs[i].script, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                             jobs[i].log);
                for (int k = 0; k < next; k++)
                    if (jobs[k].pid > 0) kill(jobs[k].pid, SIGTERM);
            }
            if (ok) {
                *units_done += units[i];
                if (o->progress) o->progress(o->progress_ctx, "synth", *units_done, total);
            }
        }
        if (o->stop && *o->stop && !rc) {
            rc = sp_fail(err, SP_ESTOPPED, "interrupted; no file written");
            for (int i = 0; i < next; i++)
                if (jobs[i].pid > 0) kill(jobs[i].pid, SIGTERM);
        }
    }
    return rc;
}

/* sox: any input -> 16 kHz mono 16-bit NIST SPHERE, no dither (-D) and
 * repeatable (-R), so the output is a function of the input. */
static void sox_line(FILE *f, const char *in, const char *out) {
    fprintf(f,
            "sox -D -R -q '%s' -r 16000 -b 16 -c 1 -e signed-integer -t sph '%s' && rm -f '%s' || "
            "exit 1\n",
            in, out, in);
}

/* Writes and runs the jobs synthesising utterances [a, b). */
static int synth_range(const char *work, utt *u, long a, long b, int par, long *done_units,
                       long total_units, const sp_speech_demo_opts *o, sp_error *err) {
    long nj_cap = (b - a) / ESPEAK_PER_JOB + N_VOICES + 2;
    job *jobs = calloc((size_t)nj_cap, sizeof *jobs);
    long *units = calloc((size_t)nj_cap, sizeof *units);
    if (!jobs || !units) {
        free(jobs);
        free(units);
        return sp_fail(err, SP_ERUNTIME, "out of memory");
    }
    int nj = 0, rc = SP_OK;
    char wav[4096], txt[4096], tmpw[4096];
    long round = a; /* names this round's scripts */
    /* The festival job first: it is the longest, so it starts early. */
    long nk = 0;
    for (long k = a; k < b; k++) nk += voices[u[k].voice].name == NULL;
    if (nk > 0) {
        job *j = &jobs[nj];
        snprintf(j->script, sizeof j->script, "%s/tmp/r%ld_festival.sh", work, round);
        snprintf(j->log, sizeof j->log, "%s/tmp/r%ld_festival.log", work, round);
        char scm[4096];
        snprintf(scm, sizeof scm, "%s/tmp/r%ld_festival.scm", work, round);
        FILE *fs = fopen(scm, "w"), *fj = fopen(j->script, "w");
        if (!fs || !fj) rc = sp_fail(err, SP_ERUNTIME, "%s/tmp: cannot write scripts", work);
        if (!rc) {
            fprintf(fs, "(voice_kal_diphone)\n");
            fprintf(fj, "set -e\nfestival -b '%s'\n", scm);
            for (long k = a; k < b; k++) {
                if (voices[u[k].voice].name) continue;
                utt_paths(work, &u[k], k, wav, txt, sizeof wav);
                snprintf(tmpw, sizeof tmpw, "%s/tmp/S%05ld.wav", work, k);
                /* Text was cleaned to [a-z0-9 ,'-]: safe inside a Scheme string. */
                fprintf(fs,
                        "(set! u (Utterance Text \"%s\"))\n(utt.synth u)\n"
                        "(utt.save.wave u \"%s\" 'riff)\n",
                        u[k].text, tmpw);
                sox_line(fj, tmpw, wav);
            }
        }
        if (fs) fclose(fs);
        if (fj) fclose(fj);
        units[nj++] = nk;
    }
    /* espeak-ng jobs of ESPEAK_PER_JOB utterances each. */
    FILE *fj = NULL;
    for (long k = a; !rc && k < b; k++) {
        const voice *v = &voices[u[k].voice];
        if (!v->name) continue;
        if (!fj) {
            job *j = &jobs[nj];
            snprintf(j->script, sizeof j->script, "%s/tmp/r%ld_espeak%03d.sh", work, round, nj);
            snprintf(j->log, sizeof j->log, "%s/tmp/r%ld_espeak%03d.log", work, round, nj);
            fj = fopen(j->script, "w");
            if (!fj) {
                rc = sp_fail(err, SP_ERUNTIME, "%s: cannot write: %s", j->script, strerror(errno));
                break;
            }
            units[nj++] = 0;
        }
        utt_paths(work, &u[k], k, wav, txt, sizeof wav);
        snprintf(tmpw, sizeof tmpw, "%s/tmp/S%05ld.wav", work, k);
        fprintf(fj, "espeak-ng -v %s -s %d -f '%s' -w '%s' || exit 1\n", v->name, v->wpm, txt,
                tmpw);
        sox_line(fj, tmpw, wav);
        if (++units[nj - 1] == ESPEAK_PER_JOB) {
            fclose(fj);
            fj = NULL;
        }
    }
    if (fj) fclose(fj);
    if (!rc) rc = run_jobs(jobs, nj, par, done_units, units, total_units, o, err);
    free(jobs);
    free(units);
    return rc;
}

/* Words per second, to plan how many sentences make the wanted minutes. */
static double est_secs(const utt *u) {
    const voice *v = &voices[u->voice];
    double wps = v->name ? v->wpm / 60.0 : 2.4;
    return count_words(u->text) / wps + 0.4;
}

int sp_speech_demo_build(const sp_speech_demo_opts *o, sp_speech_summary *sum, sp_error *err) {
    if (!o->out) return sp_fail(err, SP_EINPUT, "speech-demo: --out is required");
    if (!(o->minutes > 0)) return sp_fail(err, SP_EINPUT, "speech-demo: minutes must be > 0");
    char work[2048]; /* short enough that every path under it fits in 4096 */
    int own_work = !o->work;
    if (o->work && strlen(o->work) >= sizeof work - 64)
        return sp_fail(err, SP_EINPUT, "%s: --work path too long", o->work);
    if (own_work) {
        const char *tmpdir = getenv("TMPDIR");
        snprintf(work, sizeof work, "%s/speech-demo.XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
        if (!mkdtemp(work))
            return sp_fail(err, SP_ERUNTIME, "%s: cannot create: %s", work, strerror(errno));
    } else {
        snprintf(work, sizeof work, "%s", o->work);
    }
    int rc = prepare_work(work, err);
    textsrc ts;
    int ts_ok = 0;
    utt *u = NULL;
    long n = 0, cap = 0, synthesised = 0;
    char p[4096];
    if (!rc) {
        snprintf(p, sizeof p, "%s/tmp", work);
        if (mkdirs(p)) rc = sp_fail(err, SP_ERUNTIME, "%s: cannot create: %s", p, strerror(errno));
    }
    for (int v = 0; !rc && v < N_VOICES; v++) {
        snprintf(p, sizeof p, "%s/timit/%s/DR1/%s", work, voices[v].test ? "TEST" : "TRAIN",
                 voices[v].dir);
        if (mkdirs(p)) rc = sp_fail(err, SP_ERUNTIME, "%s: cannot create: %s", p, strerror(errno));
    }
    if (!rc) {
        if (textsrc_init(&ts))
            rc = sp_fail(err, SP_ERUNTIME, "out of memory reading texts");
        else
            ts_ok = 1;
    }
    double target = o->minutes * 60.0, have = 0;
    long par = o->jobs > 0 ? o->jobs : sysconf(_SC_NPROCESSORS_ONLN);
    if (par < 1) par = 1;
    long done_units = 0;
    /* Rounds: plan sentences for the missing time (estimated), synthesise,
     * measure; repeat until the measured total reaches the target. */
    while (!rc && have < target) {
        double plan = 0, need = (target - have) * 1.03 + 2.0;
        long a = n;
        char sentence[4096];
        while (plan < need) {
            if (!next_sentence(&ts, sentence, sizeof sentence)) break;
            if (n == cap) {
                cap = cap ? 2 * cap : 512;
                utt *nu = realloc(u, (size_t)cap * sizeof *u);
                if (!nu) {
                    rc = sp_fail(err, SP_ERUNTIME, "out of memory");
                    break;
                }
                u = nu;
            }
            u[n].text = strdup(sentence);
            u[n].voice = (int)((n + o->seed % N_VOICES) % N_VOICES);
            u[n].secs = 0;
            u[n].done = 0;
            if (!u[n].text) {
                rc = sp_fail(err, SP_ERUNTIME, "out of memory");
                break;
            }
            plan += est_secs(&u[n]);
            n++;
        }
        if (rc) break;
        if (n == a) {
            rc = sp_fail(err, SP_EINPUT,
                         "/usr/share/common-licenses, /usr/share/doc/*/copyright: text for only "
                         "%.1f of %.1f minutes of speech",
                         have / 60, o->minutes);
            break;
        }
        char wav[4096], txt[4096];
        for (long k = a; !rc && k < n; k++) {
            utt_paths(work, &u[k], k, wav, txt, sizeof wav);
            if (write_text(txt, u[k].text) || append_newline(txt))
                rc = sp_fail(err, SP_ERUNTIME, "%s: cannot write", txt);
        }
        if (!rc) rc = synth_range(work, u, a, n, (int)par, &done_units, n, o, err);
        for (long k = a; !rc && k < n; k++) {
            utt_paths(work, &u[k], k, wav, txt, sizeof wav);
            sp_audio_info info;
            rc = sp_audio_probe(wav, 0, &info, err);
            if (rc) break;
            u[k].secs = info.length / (double)SP_AUDIO_RATE;
            u[k].done = 1;
            synthesised++;
        }
        /* Keep the shortest prefix reaching the target: the result does not
         * depend on how the rounds were cut. */
        have = 0;
        for (long k = 0; !rc && k < n; k++) {
            have += u[k].secs;
            if (have >= target) {
                for (long m = k + 1; m < n; m++) {
                    utt_paths(work, &u[m], m, wav, txt, sizeof wav);
                    unlink(wav);
                    unlink(txt);
                    free(u[m].text);
                }
                n = k + 1;
                break;
            }
        }
    }
    if (!rc) {
        snprintf(p, sizeof p, "%s/tmp", work);
        rm_tree(p);
        char tree[4096], minutes[64], nutt[64], voices_s[512] = "";
        snprintf(tree, sizeof tree, "%s/timit", work);
        snprintf(minutes, sizeof minutes, "%.3f", have / 60);
        snprintf(nutt, sizeof nutt, "%ld", n);
        for (int v = 0; v < N_VOICES; v++) {
            size_t l = strlen(voices_s);
            snprintf(voices_s + l, sizeof voices_s - l, "%s%s%s", v ? " " : "", voices[v].dir,
                     voices[v].test ? "(test)" : "");
        }
        /* `source` replaces the (temporary) tree path: same seed, same bytes. */
        const char *extra[] = {"source",
                               "speech-demo: espeak-ng + festival kal, sox to NIST SPHERE",
                               "demo_minutes",
                               minutes,
                               "demo_utterances",
                               nutt,
                               "demo_voices",
                               voices_s,
                               "demo_text",
                               "/usr/share/common-licenses/*, /usr/share/doc/*/copyright (sorted)",
                               NULL};
        sp_timit_opts to;
        sp_timit_opts_default(&to);
        to.root = tree;
        to.out = o->out;
        to.seed = o->seed;
        to.streams = o->streams;
        to.corpus = "speech-demo";
        to.extra_attrs = extra;
        to.progress = o->progress;
        to.progress_ctx = o->progress_ctx;
        to.stop = o->stop;
        rc = sp_timit_build(&to, sum, err);
    }
    (void)synthesised;
    for (long k = 0; k < n; k++) free(u[k].text);
    free(u);
    if (ts_ok) textsrc_free(&ts);
    if (own_work) rm_tree(work);
    return rc;
}
