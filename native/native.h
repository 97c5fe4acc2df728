/* tracer._native: the few hot loops of a live run that Python cannot make
 * cheap enough (issue 9: CPU per traced packet). One extension module; each
 * job in its own source file, registered in module.c. Every function here
 * has a Python twin that stays the reference and the fallback (see
 * tracer/native.py): the tests compare their bytes. */
#ifndef TRACER_NATIVE_H
#define TRACER_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* journey_json.c */
PyObject *native_journey_json(PyObject *self, PyObject *args);
extern const char native_journey_json_doc[];
/* address_ids.c */
PyObject *native_address_ids(PyObject *self, PyObject *args);
extern const char native_address_ids_doc[];
/* journey_text.c */
PyObject *native_journey_text(PyObject *self, PyObject *args);
extern const char native_journey_text_doc[];
/* journey_layout.c */
PyObject *native_journey_layout(PyObject *self, PyObject *args);
extern const char native_journey_layout_doc[];
/* journey_rows.c */
PyObject *native_journey_hops(PyObject *self, PyObject *args);
extern const char native_journey_hops_doc[];
PyObject *native_journey_facts(PyObject *self, PyObject *args);
extern const char native_journey_facts_doc[];
/* ring_records.c */
PyObject *native_ring_records(PyObject *self, PyObject *args);
extern const char native_ring_records_doc[];
/* segments.c */
PyObject *native_segment_groups(PyObject *self, PyObject *args);
extern const char native_segment_groups_doc[];

/* reservoir.c */
PyObject *native_reservoir_draw(PyObject *self, PyObject *args);
extern const char native_reservoir_draw_doc[];

#endif
