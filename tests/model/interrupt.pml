/* Used buffer notifications with interrupt coalescing, as vpci implements them
 * (virtio/interrupt_coalescer.h, Virtqueue::notify_driver_if_needed / check_notification,
 * SplitRing::needs_notification) against a driver that follows virtio 1.3 §2.7.10 and
 * §2.7.14 (Linux's vring_interrupt, virtqueue_enable_cb_prepare, virtqueue_poll):
 *
 *   device (its event loop, one callback at a time): a completion writes the used entry
 *           and advances used idx (full fence), then either checks at once whether the
 *           driver wants an interrupt, or — coalescing — holds that check: arms a timer
 *           if none is armed, or lets the armed one cover it, or (batch full) checks now
 *           and drops the timer. A timer that fires checks. A check compares the driver's
 *           request with every entry used since the last check: with EVENT_IDX
 *           vring_need_event(used_event, used, checked), else VIRTQ_AVAIL_F_NO_INTERRUPT.
 *   driver: on an interrupt, suppress interrupts (flag, or nothing with EVENT_IDX), take
 *           every used entry, ask again (flag 0 / used_event = entries seen), full fence,
 *           and take more if the device used some meanwhile.
 *
 * Sequential consistency is the memory model (full fences on both sides). The property:
 * the driver sees every buffer it submitted — a driver asleep with a used buffer it is
 * never told about is a deadlock (it waits at a non-end state).
 * -DEVENT_IDX models VIRTIO_F_EVENT_IDX; -DNO_COALESCE checks at every completion (the
 * default without interrupt_delay_us); -DCHECK_LAST_ONLY makes a held check compare only
 * the newest entry instead of the whole range since the last check, and spin must then
 * find the lost interrupt (tests/model/check-model.sh).
 */
#ifndef BUFFERS
#define BUFFERS 3
#endif

byte used = 0;          /* used idx the device published */
byte seen = 0;          /* the driver's last_used_idx */
byte used_event = 0;    /* used_event in the avail ring (EVENT_IDX) */
bool no_interrupt = 0;  /* avail.flags & VIRTQ_AVAIL_F_NO_INTERRUPT */
byte checked = 0;       /* used idx at the device's last check (SplitRing) */
bool held = 0;          /* a check is held back: the coalescing timer is armed */
chan irq = [BUFFERS] of { bit };

/* Virtqueue::check_notification: does the driver want to be told? */
inline check() {
#ifdef EVENT_IDX
#ifdef CHECK_LAST_ONLY
  old = used - 1;
#else
  old = checked;
#endif
  behind = used - used_event - 1;  /* vring_need_event on bytes (mod 256): ... */
  added = used - old;
  checked = used;
  if
  :: behind < added -> irq ! 1     /* ... (new - event - 1) < (new - old) */
  :: else -> skip
  fi
#else
  checked = used;
  if
  :: !no_interrupt -> irq ! 1
  :: else -> skip
  fi
#endif
}

active proctype device_loop() {
  byte old;
  byte behind;
  byte added;
end_loop:
  do
  :: used < BUFFERS ->             /* a completion (a request done on the loop) */
     used++;
#ifdef NO_COALESCE
     check()
#else
     if                            /* InterruptCoalescer::hold */
     :: !held -> held = 1          /* arm the timer */
     :: held -> skip               /* the armed timer covers this entry too */
     :: held -> held = 0; check()  /* the batch is full: check now, drop the timer */
     fi
#endif
  :: held ->                       /* the timer fires, at any later moment */
     held = 0;
     check()
  od
}

active proctype driver() {
  do
  :: seen == BUFFERS -> break
  :: else ->
     irq ? _;
again:
#ifndef EVENT_IDX
     no_interrupt = 1;             /* virtqueue_disable_cb */
#endif
     seen = used;                  /* take every used entry */
#ifdef EVENT_IDX
     used_event = seen;            /* "tell me once entry `seen` is used" */
#else
     no_interrupt = 0;
#endif
     if                            /* full fence; virtqueue_poll: more meanwhile? */
     :: seen != used -> goto again
     :: else -> skip
     fi
  od
}
