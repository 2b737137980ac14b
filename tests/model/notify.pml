/* The notification protocol of a polled virtqueue, as vpci implements it
 * (virtio/queue_poller.h, SplitRing::set_notifications_suppressed, DeviceCore::process)
 * against a driver that follows virtio 1.3 §2.7.13 (Linux's virtqueue_kick_prepare):
 *
 *   driver: write the buffer and advance avail idx; full fence; read the device's
 *           request (VIRTQ_USED_F_NO_NOTIFY, or with EVENT_IDX vring_need_event on
 *           avail_event); kick when asked.
 *   device: on a kick (or while polling) serve every available buffer; open a poll window
 *           by suppressing notifications (NO_NOTIFY / avail_event = next_avail - 1);
 *           while the window lasts, look at the ring and serve what is there; when the
 *           window passes (at any moment: nondeterministic), ask for notifications again
 *           (flags 0 / avail_event = next_avail), full fence, and look once more — serving
 *           (and polling again) if something arrived, else sleep until a kick.
 *
 * Both sides use full fences between their write and their read (virtio/ring_common.h
 * full_fence, virtio_mb in Linux), so sequential consistency is the memory model.
 * The property: the driver's buffers are all served — a device asleep with a buffer
 * it will never be told about is a deadlock (the driver waits at a non-end state).
 * -DEVENT_IDX models VIRTIO_F_EVENT_IDX; -DNO_RECHECK removes the final look, and spin
 * must then find the lost wake-up (tests/model/CMakeLists.txt runs all four).
 */
#ifndef BUFFERS
#define BUFFERS 3
#endif

byte avail = 0;       /* avail idx the driver published */
byte consumed = 0;    /* the device's next_avail */
bool no_notify = 0;   /* used.flags & VIRTQ_USED_F_NO_NOTIFY */
byte avail_event = 0; /* used ring avail_event (EVENT_IDX) */
chan kick = [BUFFERS] of { bit };  /* posted doorbell writes */


active proctype driver() {
  byte old;
  byte i = 0;
  byte behind;  /* vring_need_event(avail_event, new, old), on bytes (mod 256) ... */
  byte added;
  do
  :: i < BUFFERS ->
     old = avail;
     avail++;             /* buffer and idx written, then a full fence */
#ifdef EVENT_IDX
     behind = avail - avail_event - 1;
     added = avail - old;
     if
     :: behind < added -> kick ! 1  /* ... is (new - event - 1) < (new - old) */
     :: else -> skip
     fi;
#else
     if
     :: !no_notify -> kick ! 1
     :: else -> skip
     fi;
#endif
     i++
  :: else -> break
  od;
  (consumed == BUFFERS)   /* every buffer served: the only valid end */
}

active proctype device() {
end_asleep:
  kick ? _;
serve:
  consumed = avail;       /* DeviceCore::process: pop until empty */
  /* QueuePoller::served: the window opens */
#ifdef EVENT_IDX
  avail_event = consumed - 1;
#else
  no_notify = 1;
#endif
  do
  :: consumed != avail -> consumed = avail   /* a look inside the window finds work */
  :: true -> break                           /* the window passes */
  od;
  /* QueuePoller::tick: ask again, full fence, ... */
#ifdef EVENT_IDX
  avail_event = consumed;
#else
  no_notify = 0;
#endif
#ifndef NO_RECHECK
  /* ... and look once more before sleeping */
  if
  :: consumed != avail -> goto serve
  :: else -> goto end_asleep
  fi
#else
  goto end_asleep
#endif
}
