/* stepline.runners._briefc: brief steps started, and waited for until a silent end, by threads
 * of C that never take the GIL.
 *
 * Why C: on a Python spawner thread every system call gives up the interpreter lock and must
 * take it back, and the event loop holds it for most of each job's Python. A {"run": ["true"]}
 * step made about nine such round trips on its spawner (two pipes, the vfork, closing the
 * child's ends, the error pipe, the polls, waitid), and the thread took the GIL again to take
 * the request and hand the result back: the "GIL convoy" of NOTES.md, Performance, "Session
 * 10" and "Session 11". Here none: the Python side (_pool.py, _spawn.brief_start) decides when
 * this may be used, submits, and turns each outcome into a Child; the rules are those of
 * _forkexec.py and _early.py.
 *
 * The child does what CPython's _posixsubprocess does for Popen(start_new_session=True,
 * close_fds=True, restore_signals=True) with vfork, in the same order: signal handlers reset
 * (the child shares our memory until it execs, so no handler of ours may run in it), its ends
 * of the pipes as fds 0-2, chdir, SIGPIPE and SIGXFSZ back to SIG_DFL, setsid, every other fd
 * closed, the signal mask restored, then execve over the candidate paths. A failure is written
 * to memory the parent shares (vfork: the parent resumes only once the child has exec'd or
 * exited), which is what glibc's posix_spawn does; the Python side uses this module only where
 * a probe showed that a start here is a real vfork (_forkexec.vfork_holds).
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Bumped when the calls' arguments or results change: _spawn.py refuses a stale build. */
#define BRIEFC_API 4

enum stage { STAGE_NONE = 0, STAGE_SETUP = 1, STAGE_CHDIR = 2, STAGE_EXEC = 3 };
/* A start's outcome, as collect() tells it (and the module exports, for _pool.py). */
enum outcome { FAILED = -1, RUNNING = 0, ENDED = 1, WOKEN = 2, SKIPPED = 3 };

struct start {
    char *const *argv;
    char *const *paths;
    Py_ssize_t npaths;
    char *const *envp; /* NULL: ours */
    const char *cwd;   /* NULL: ours */
    int fds[3];        /* the child's stdin, stdout, stderr */
    const sigset_t *mask;
    volatile int error; /* written by the child (shared memory under vfork) */
    volatile int stage;
};

static void
close_from(int low)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, low, ~0U, 0) == 0)
        return;
#endif
    struct rlimit lim;
    int high = (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
                   ? (int)lim.rlim_cur
                   : 65536;
    for (int fd = low; fd < high; fd++)
        close(fd);
}

/* In the vfork child: only async-signal-safe calls, and never a return. */
static void _Py_NO_RETURN
child_exec(struct start *s)
{
    int fds[3];
    for (int sig = 1; sig < _NSIG; sig++) {
        struct sigaction act;
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &act) != 0)
            continue;
        if (act.sa_handler == SIG_DFL || act.sa_handler == SIG_IGN)
            continue;
        memset(&act, 0, sizeof act);
        act.sa_handler = SIG_DFL;
        sigaction(sig, &act, NULL);
    }
    /* A source among fds 0-2 (a parent started with one of them closed) must not be
     * overwritten by another's dup2 first: move such sources above 2. */
    for (int i = 0; i < 3; i++) {
        fds[i] = s->fds[i];
        if (fds[i] < 3 && (fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3)) < 0)
            goto failed_setup;
    }
    for (int i = 0; i < 3; i++)
        if (dup2(fds[i], i) < 0)
            goto failed_setup;
    if (s->cwd != NULL && chdir(s->cwd) < 0) {
        s->error = errno;
        s->stage = STAGE_CHDIR;
        _exit(255);
    }
    signal(SIGPIPE, SIG_DFL); /* what Python ignores, as _Py_RestoreSignals does */
    signal(SIGXFSZ, SIG_DFL);
    if (setsid() < 0)
        goto failed_setup;
    close_from(3);
    sigprocmask(SIG_SETMASK, s->mask, NULL);
    int saved = 0;
    for (Py_ssize_t i = 0; i < s->npaths; i++) {
        if (s->envp != NULL)
            execve(s->paths[i], s->argv, s->envp);
        else
            execv(s->paths[i], s->argv);
        if (errno != ENOENT && errno != ENOTDIR && saved == 0)
            saved = errno;
    }
    s->error = saved != 0 ? saved : errno;
    s->stage = STAGE_EXEC;
    _exit(255);
failed_setup:
    s->error = errno;
    s->stage = STAGE_SETUP;
    _exit(255);
}

/* Not inlined, as CPython's do_fork_exec: the frame that vforks stays small and is the
 * caller's, whose variables the child must not reuse. */
static pid_t __attribute__((noinline))
vfork_exec(struct start *s)
{
    pid_t pid = vfork();
    if (pid == 0)
        child_exec(s);
    return pid;
}

static long
ms_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
}

static int
exited(pid_t pid)
{
    siginfo_t info;
    info.si_pid = 0;
    return waitid(P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
}

/* _early.ended_soon: both pipes hung up with nothing in them and the child exited (not reaped:
 * the event loop reaps), or RUNNING (output, the time is up) or WOKEN (the interrupt). */
static enum outcome
wait_brief(pid_t pid, int out, int err, int wake, int wait_ms)
{
    struct timespec start;
    struct pollfd fds[3] = {{out, POLLIN, 0}, {err, POLLIN, 0}, {wake, POLLIN, 0}};
    int open_pipes = 2;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (open_pipes > 0) {
        long left = wait_ms - ms_since(&start);
        if (left <= 0)
            return RUNNING;
        if (poll(fds, 3, (int)left) < 0) {
            if (errno == EINTR)
                continue; /* a signal for Python's handler: its wake-up fd tells the loop */
            return RUNNING;
        }
        if (fds[2].revents)
            return WOKEN;
        for (int i = 0; i < 2; i++) {
            if (fds[i].revents & POLLIN)
                return RUNNING; /* output: the loop reads it, from the first byte */
            if (fds[i].revents) {
                fds[i].fd = -1; /* hung up, empty: every writer closed it */
                open_pipes--;
            }
        }
    }
    if (exited(pid))
        return ENDED;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0)
        return RUNNING;
    struct pollfd end[2] = {{pidfd, POLLIN, 0}, {wake, POLLIN, 0}};
    enum outcome outcome = RUNNING;
    long left = wait_ms - ms_since(&start);
    while (left > 0 && poll(end, 2, (int)left) < 0 && errno == EINTR)
        left = wait_ms - ms_since(&start);
    if (end[1].revents)
        outcome = WOKEN;
    else if (end[0].revents && exited(pid))
        outcome = ENDED;
    close(pidfd);
    return outcome;
}

/* A new list of the items of a sequence of str or bytes as bytes (str encoded as os.fsencode
 * does; an embedded NUL refused). */
static PyObject *
encoded(PyObject *seq)
{
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of str or bytes");
    if (fast == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject *list = PyList_New(n);
    for (Py_ssize_t i = 0; list != NULL && i < n; i++) {
        PyObject *item;
        if (!PyUnicode_FSConverter(PySequence_Fast_GET_ITEM(fast, i), &item))
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, item);
    }
    Py_DECREF(fast);
    return list;
}

struct parent {
    int out[2], err[2];
    pid_t pid;
    int failed;        /* errno of our own failure (a pipe, the vfork) */
    enum outcome outcome;
};

/* Without the GIL: the pipes, the start, and, once it exec'd, the wait. */
static void
start_and_wait(struct start *s, struct parent *p, int stdin_fd, int wake, int wait_ms,
               const sigset_t *child_mask)
{ /* child_mask: the mask the child execs with (the pool's threads block every signal) */
    sigset_t all, old;
    if (pipe2(p->out, O_CLOEXEC) < 0) {
        p->failed = errno;
        return;
    }
    if (pipe2(p->err, O_CLOEXEC) < 0) {
        p->failed = errno;
        close(p->out[0]);
        close(p->out[1]);
        return;
    }
    s->fds[0] = stdin_fd;
    s->fds[1] = p->out[1];
    s->fds[2] = p->err[1];
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* no handler of ours may run in the child */
    s->mask = child_mask;
    p->pid = vfork_exec(s);
    int vfork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(p->out[1]);
    close(p->err[1]);
    if (p->pid < 0 || s->stage != STAGE_NONE) {
        if (p->pid < 0)
            p->failed = vfork_errno;
        else
            waitpid(p->pid, NULL, 0); /* it exited: reap it, as Popen does */
        close(p->out[0]);
        close(p->err[0]);
        return;
    }
    p->outcome = wait_brief(p->pid, p->out[0], p->err[0], wake, wait_ms);
    if (p->outcome == ENDED) { /* nothing to read: the pipes are of no more use */
        close(p->out[0]);
        close(p->err[0]);
        p->out[0] = p->err[0] = -1;
    }
}

/* ---- The pool ----
 *
 * The event loop submits (the request's strings copied into one block); a thread starts the
 * child and waits (start_and_wait), appends the outcome to the done list and, if the list was
 * empty, writes a byte to the pool's notify pipe; the loop, woken by it, collects every outcome
 * at once. A cancel marks its request (by token) and writes the wake-up pipe of the thread
 * running it. One Pool per trio run (_pool.py); its threads end at close. */

#define POOL_MAX_THREADS 16

struct request {
    struct request *next;
    long long token;
    struct start start;
    int stdin_fd, wait_ms;
    int interrupted;  /* a cancel came (under the lock) */
    int wake;         /* the running thread's wake-up pipe (write end), -1: not running */
    struct parent result; /* result.outcome: SKIPPED when never started */
    char *strings;    /* argv, paths, envp, cwd: one block */
};

struct shared {
    pthread_mutex_t lock;
    pthread_cond_t work;
    struct request *todo, *todo_tail, *done, *done_tail, *running[POOL_MAX_THREADS];
    int notify[2];
    int notified, closing, refs, slots;
    pid_t tids[POOL_MAX_THREADS]; /* each thread's id, once it runs (for tests, ps -T) */
    sigset_t child_mask; /* the mask a child execs with: the creating thread's */
};

typedef struct {
    PyObject_HEAD
    struct shared *shared;
    pid_t owner; /* a forked child must not touch the lock (its holder may be gone) */
} PoolObject;

static void
shared_release(struct shared *sh) /* with the lock held; frees it with the last reference */
{
    int last = --sh->refs == 0;
    pthread_mutex_unlock(&sh->lock);
    if (!last)
        return;
    close(sh->notify[0]);
    close(sh->notify[1]);
    pthread_mutex_destroy(&sh->lock);
    pthread_cond_destroy(&sh->work);
    free(sh);
}

static void
request_free(struct request *r)
{
    free(r->strings);
    free(r);
}

static void *
pool_thread(void *arg)
{
    struct shared *sh = arg;
    int wake[2] = {-1, -1};
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are Python's: other threads take them */
    if (pipe2(wake, O_NONBLOCK | O_CLOEXEC) < 0)
        wake[0] = wake[1] = -1; /* no wake-up: a cancel waits for the wait's end (5 ms) */
    pthread_setname_np(pthread_self(), "stepline pool");
    pthread_mutex_lock(&sh->lock);
    int slot = sh->slots++; /* this thread's place in running[], for interrupt() */
    sh->tids[slot] = (pid_t)syscall(SYS_gettid);
    for (;;) {
        while (sh->todo == NULL && !sh->closing)
            pthread_cond_wait(&sh->work, &sh->lock);
        if (sh->todo == NULL)
            break; /* closing, nothing left */
        struct request *r = sh->todo;
        if ((sh->todo = r->next) == NULL)
            sh->todo_tail = NULL;
        r->next = NULL;
        if (r->interrupted) {
            r->result.outcome = SKIPPED;
        } else {
            r->wake = wake[1];
            sh->running[slot] = r;
            pthread_mutex_unlock(&sh->lock);
            start_and_wait(&r->start, &r->result, r->stdin_fd, wake[0], r->wait_ms,
                           &sh->child_mask);
            pthread_mutex_lock(&sh->lock);
            sh->running[slot] = NULL;
            r->wake = -1;
            if (r->interrupted && wake[0] >= 0) {
                char bytes[64];
                while (read(wake[0], bytes, sizeof bytes) > 0)
                    ;
            }
        }
        if (sh->done_tail != NULL)
            sh->done_tail->next = r;
        else
            sh->done = r;
        sh->done_tail = r;
        if (!sh->notified) {
            sh->notified = 1;
            while (write(sh->notify[1], "!", 1) < 0 && errno == EINTR)
                ;
        }
    }
    if (wake[0] >= 0) {
        close(wake[0]);
        close(wake[1]);
    }
    shared_release(sh);
    return NULL;
}

static PyObject *
pool_new(PyTypeObject *type, PyObject *args, PyObject *Py_UNUSED(kwargs))
{
    int threads;
    if (!PyArg_ParseTuple(args, "i:Pool", &threads))
        return NULL;
    if (threads < 1 || threads > POOL_MAX_THREADS)
        return PyErr_Format(PyExc_ValueError, "threads: 1 to %d", POOL_MAX_THREADS);
    struct shared *sh = calloc(1, sizeof *sh);
    if (sh == NULL)
        return PyErr_NoMemory();
    if (pipe2(sh->notify, O_NONBLOCK | O_CLOEXEC) < 0) {
        free(sh);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    pthread_mutex_init(&sh->lock, NULL);
    pthread_cond_init(&sh->work, NULL);
    pthread_sigmask(SIG_BLOCK, NULL, &sh->child_mask);
    sh->refs = 1;
    PoolObject *self = (PoolObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        pthread_mutex_lock(&sh->lock);
        shared_release(sh);
        return NULL;
    }
    self->shared = sh;
    self->owner = getpid();
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int failed = 0;
    pthread_mutex_lock(&sh->lock);
    for (int i = 0; i < threads && !failed; i++) {
        pthread_t thread;
        sh->refs++;
        if ((failed = pthread_create(&thread, &attr, pool_thread, sh)) != 0)
            sh->refs--;
    }
    pthread_mutex_unlock(&sh->lock);
    pthread_attr_destroy(&attr);
    if (failed) {
        Py_DECREF(self); /* closes: the threads made end */
        errno = failed;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return (PyObject *)self;
}

static void
pool_close_shared(PoolObject *self)
{
    struct shared *sh = self->shared;
    if (sh == NULL)
        return;
    self->shared = NULL;
    if (self->owner != getpid())
        return; /* a forked child: the lock may be held by a thread it does not have */
    pthread_mutex_lock(&sh->lock);
    sh->closing = 1;
    pthread_cond_broadcast(&sh->work);
    shared_release(sh);
}

static void
pool_dealloc(PoolObject *self)
{
    pool_close_shared(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Copy a list of bytes (encoded()) to *at (advanced past them), their pointers into array,
 * NULL-terminated. The block was sized by strings_size: the copy always fits. */
static void
copy_strings(PyObject *list, char **array, char **at)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        size_t size = (size_t)PyBytes_GET_SIZE(item) + 1;
        memcpy(*at, PyBytes_AS_STRING(item), size);
        array[i] = *at;
        *at += size;
    }
    array[n] = NULL;
}

static size_t
strings_size(PyObject *list)
{
    size_t size = ((size_t)PyList_GET_SIZE(list) + 1) * sizeof(char *);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++)
        size += (size_t)PyBytes_GET_SIZE(PyList_GET_ITEM(list, i)) + 1;
    return size;
}

static struct request *
request_new(PyObject *argv, PyObject *paths, PyObject *env, PyObject *cwd)
{
    size_t size = strings_size(argv) + strings_size(paths) + (env ? strings_size(env) : 0);
    size += cwd ? (size_t)PyBytes_GET_SIZE(cwd) + 1 : 0;
    struct request *r = calloc(1, sizeof *r);
    char *block = malloc(size);
    if (r == NULL || block == NULL) {
        free(r);
        free(block);
        return NULL;
    }
    r->strings = block;
    char **arrays = (char **)block; /* the pointer arrays first (aligned), then the bytes */
    size_t pointers = (size_t)(PyList_GET_SIZE(argv) + PyList_GET_SIZE(paths) + 2 +
                               (env ? PyList_GET_SIZE(env) + 1 : 0));
    char *at = block + pointers * sizeof(char *);
    r->start.argv = arrays;
    copy_strings(argv, arrays, &at);
    arrays += PyList_GET_SIZE(argv) + 1;
    r->start.paths = arrays;
    r->start.npaths = PyList_GET_SIZE(paths);
    copy_strings(paths, arrays, &at);
    arrays += PyList_GET_SIZE(paths) + 1;
    if (env) {
        r->start.envp = arrays;
        copy_strings(env, arrays, &at);
    }
    if (cwd) {
        memcpy(at, PyBytes_AS_STRING(cwd), (size_t)PyBytes_GET_SIZE(cwd) + 1);
        r->start.cwd = at;
    }
    r->wake = -1;
    r->result.pid = -1;
    return r;
}

PyDoc_STRVAR(pool_submit_doc,
"submit(token, argv, paths, env, cwd, stdin_fd, wait_ms)\n"
"--\n\n"
"Queue a start: argv (str or bytes) in a new session with its output piped, trying each of\n"
"paths; env the whole environment as b'NAME=value' (None: ours); cwd str or None; then a\n"
"wait of up to wait_ms for its silent end. Its outcome comes from collect() under token.");

static PyObject *
pool_submit(PoolObject *self, PyObject *args)
{
    long long token;
    PyObject *argv_o, *paths_o, *env_o, *cwd_o;
    int stdin_fd, wait_ms;
    if (!PyArg_ParseTuple(args, "LOOOOii:submit", &token, &argv_o, &paths_o, &env_o, &cwd_o,
                          &stdin_fd, &wait_ms))
        return NULL;
    if (self->shared == NULL)
        return PyErr_Format(PyExc_ValueError, "the pool is closed");
    PyObject *argv = NULL, *paths = NULL, *env = NULL, *cwd = NULL, *result = NULL;
    if ((argv = encoded(argv_o)) == NULL || (paths = encoded(paths_o)) == NULL)
        goto done;
    if (env_o != Py_None && (env = encoded(env_o)) == NULL)
        goto done;
    if (cwd_o != Py_None && !PyUnicode_FSConverter(cwd_o, &cwd))
        goto done;
    if (PyList_GET_SIZE(argv) == 0) {
        PyErr_SetString(PyExc_ValueError, "empty argv");
        goto done;
    }
    struct request *r = request_new(argv, paths, env, cwd);
    if (r == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    r->token = token;
    r->stdin_fd = stdin_fd;
    r->wait_ms = wait_ms;
    struct shared *sh = self->shared;
    pthread_mutex_lock(&sh->lock);
    if (sh->todo_tail != NULL)
        sh->todo_tail->next = r;
    else
        sh->todo = r;
    sh->todo_tail = r;
    pthread_cond_signal(&sh->work);
    pthread_mutex_unlock(&sh->lock);
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(argv);
    Py_XDECREF(paths);
    Py_XDECREF(env);
    Py_XDECREF(cwd);
    return result;
}

PyDoc_STRVAR(pool_interrupt_doc,
"interrupt(token)\n--\n\n"
"A cancel: the request under token, if not started yet, is not started (its outcome is\n"
"SKIPPED); if waiting, its wait ends (WOKEN). Unknown or done: nothing.");

static PyObject *
pool_interrupt(PoolObject *self, PyObject *arg)
{
    long long token = PyLong_AsLongLong(arg);
    if (token == -1 && PyErr_Occurred())
        return NULL;
    struct shared *sh = self->shared;
    if (sh == NULL)
        Py_RETURN_NONE;
    pthread_mutex_lock(&sh->lock);
    for (struct request *r = sh->todo; r != NULL; r = r->next)
        if (r->token == token)
            r->interrupted = 1;
    for (int i = 0; i < POOL_MAX_THREADS; i++) {
        struct request *r = sh->running[i];
        if (r != NULL && r->token == token) {
            r->interrupted = 1;
            if (r->wake >= 0)
                while (write(r->wake, "!", 1) < 0 && errno == EINTR)
                    ;
        }
    }
    pthread_mutex_unlock(&sh->lock);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(pool_collect_doc,
"collect()\n--\n\n"
"Every outcome since the last collect, after draining the notify pipe: a list of (token, pid,\n"
"stdout_fd, stderr_fd, outcome, errno, filename_is_cwd) where outcome is RUNNING (capture\n"
"it), ENDED silently (exited, not reaped; both fds -1), WOKEN by a cancel, SKIPPED\n"
"(cancelled before its start), or FAILED (errno; filename_is_cwd: 1 chdir, 0 exec, -1\n"
"neither): the module's constants.");

static PyObject *
pool_collect(PoolObject *self, PyObject *Py_UNUSED(ignored))
{
    struct shared *sh = self->shared;
    if (sh == NULL)
        return PyList_New(0);
    char bytes[64];
    while (read(sh->notify[0], bytes, sizeof bytes) > 0)
        ;
    pthread_mutex_lock(&sh->lock);
    struct request *r = sh->done;
    sh->done = sh->done_tail = NULL;
    sh->notified = 0;
    pthread_mutex_unlock(&sh->lock);
    PyObject *list = PyList_New(0);
    while (r != NULL) {
        struct request *next = r->next;
        PyObject *item = NULL;
        if (list != NULL) {
            struct parent *p = &r->result;
            int failed = p->outcome != SKIPPED && (p->failed || r->start.stage != STAGE_NONE);
            int error = p->failed ? p->failed : r->start.error;
            int where = r->start.stage == STAGE_CHDIR ? 1 : r->start.stage == STAGE_EXEC ? 0 : -1;
            if (failed)
                item = Py_BuildValue("(Liiiiii)", r->token, -1, -1, -1, FAILED, error, where);
            else if (p->outcome == SKIPPED)
                item = Py_BuildValue("(Liiiiii)", r->token, -1, -1, -1, SKIPPED, 0, -1);
            else
                item = Py_BuildValue("(Liiiiii)", r->token, (int)p->pid, p->out[0], p->err[0],
                                     (int)p->outcome, 0, -1);
            if (item == NULL || PyList_Append(list, item) < 0)
                Py_CLEAR(list);
            Py_XDECREF(item);
        }
        request_free(r);
        r = next;
    }
    return list;
}

static PyObject *
pool_fileno(PoolObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->shared == NULL)
        return PyErr_Format(PyExc_ValueError, "the pool is closed");
    return PyLong_FromLong(self->shared->notify[0]);
}

static PyObject *
pool_thread_ids(PoolObject *self, PyObject *Py_UNUSED(ignored))
{
    struct shared *sh = self->shared;
    PyObject *list = PyList_New(0);
    if (sh == NULL || list == NULL)
        return list;
    pid_t tids[POOL_MAX_THREADS];
    pthread_mutex_lock(&sh->lock);
    int count = sh->slots;
    memcpy(tids, sh->tids, sizeof tids);
    pthread_mutex_unlock(&sh->lock);
    for (int i = 0; i < count; i++) {
        PyObject *tid = PyLong_FromLong(tids[i]);
        if (tid == NULL || PyList_Append(list, tid) < 0) {
            Py_XDECREF(tid);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(tid);
    }
    return list;
}

static PyObject *
pool_close(PoolObject *self, PyObject *Py_UNUSED(ignored))
{
    pool_close_shared(self);
    Py_RETURN_NONE;
}

static PyMethodDef pool_methods[] = {
    {"submit", (PyCFunction)pool_submit, METH_VARARGS, pool_submit_doc},
    {"interrupt", (PyCFunction)pool_interrupt, METH_O, pool_interrupt_doc},
    {"collect", (PyCFunction)pool_collect, METH_NOARGS, pool_collect_doc},
    {"fileno", (PyCFunction)pool_fileno, METH_NOARGS, "The notify pipe's read end."},
    {"thread_ids", (PyCFunction)pool_thread_ids, METH_NOARGS,
     "The kernel ids of the threads started so far (none once closed)."},
    {"close", (PyCFunction)pool_close, METH_NOARGS,
     "End the threads once the queue is empty; idempotent."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PoolType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stepline.runners._briefc.Pool",
    .tp_basicsize = sizeof(PoolObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Pool(threads): C threads that start brief steps for the event loop (see above).",
    .tp_new = pool_new,
    .tp_dealloc = (destructor)pool_dealloc,
    .tp_methods = pool_methods,
};

static PyMethodDef methods[] = {
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef briefc = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "stepline.runners._briefc",
    .m_doc = "Brief steps started by threads of C, without the GIL (see _pool.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__briefc(void)
{
    if (PyType_Ready(&PoolType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&briefc);
    if (module == NULL)
        return NULL;
    if (PyModule_AddIntConstant(module, "API", BRIEFC_API) < 0 ||
        PyModule_AddIntConstant(module, "FAILED", FAILED) < 0 ||
        PyModule_AddIntConstant(module, "RUNNING", RUNNING) < 0 ||
        PyModule_AddIntConstant(module, "ENDED", ENDED) < 0 ||
        PyModule_AddIntConstant(module, "WOKEN", WOKEN) < 0 ||
        PyModule_AddIntConstant(module, "SKIPPED", SKIPPED) < 0 ||
        PyModule_AddObjectRef(module, "Pool", (PyObject *)&PoolType) < 0)
        Py_CLEAR(module);
    return module;
}
