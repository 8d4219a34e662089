{# USES_VARIABLES { N, _synaptic_pre, _synaptic_post } #}
{# arsim's version of Brian2's cpp_standalone summed-variable template. Brian2 sums
   synapse by synapse through the target index, a read-modify-write chain that the compiler
   cannot vectorise. arsim lays its all-to-all synapses out block by block over the target
   (synapse k feeds target k mod n_target and, within block b = k div n_target, one and the
   same neuron on the other side, see arsim.synapses.all_to_all): this template checks that
   layout once per program run and then sums block by block in a contiguous inner loop, with
   OpenMP threads taking fixed ranges of targets (Brian2 runs this loop on one thread). In that
   loop the other side's index is read at the block's first synapse, so the other side's value
   is one number per block and the loop is a vectorised axpy over W, without gathers. Every
   target still receives its terms in the same order, so the result is bit-identical to
   Brian2's loop, which remains the fallback for any other layout. #}
{% extends 'common_group.cpp' %}

{% block maincode %}
    {% set _target_var_array = get_array_name(_target_var) %}
    {% set _index_array = get_array_name(_index_var) %}
    {% set _other_array = get_array_name(variables['_synaptic_post'] if _index_var is sameas variables['_synaptic_pre'] else variables['_synaptic_pre']) %}
    //// MAIN CODE ////////////
    const int _target_size = {{constant_or_scalar(_target_size_name, variables[_target_size_name])}};

    // Set all the target variable values to zero
    for (int _target_idx=0; _target_idx<_target_size; _target_idx++)
    {
        {{_target_var_array}}[_target_idx + {{_target_start}}] = 0;
    }

    // scalar code
    const size_t _vectorisation_idx = -1;
    {{scalar_code|autoindent}}

    const int _n_synapses = {{N}};
    static int _blocked = -1;  // the layout is fixed for the whole program run
    if (_blocked < 0)
    {
        _blocked = _target_size > 0 && _n_synapses % _target_size == 0;
        for (int _idx=0; _blocked && _idx<_n_synapses; _idx++)
            if ({{_index_array}}[_idx] != {{_target_start}} + _idx % _target_size
                || {{_other_array}}[_idx] != {{_other_array}}[_idx - _idx % _target_size])
                _blocked = 0;
    }
    if (_blocked)
    {
        // the targets in fixed ranges, one per thread (arsim_summation_threads), all blocks each
        {{c_data_type(_target_var.dtype)}}* __restrict _block_target = {{_target_var_array}} + {{_target_start}};
        const int _n_blocks = _n_synapses / _target_size;
        const int _parts = {{ arsim_summation_threads }} < _target_size ? {{ arsim_summation_threads }} : _target_size;
        {% if arsim_summation_threads > 1 %}
        #pragma omp parallel for schedule(static) num_threads({{ arsim_summation_threads }})
        {% endif %}
        for (int _part=0; _part<_parts; _part++)
        {
            const int _first = (int)(((long)_target_size * _part) / _parts);
            const int _last = (int)(((long)_target_size * (_part + 1)) / _parts);
            for (int _block=0; _block<_n_blocks; _block++)
            {
                const size_t _block_first = (size_t)_block * _target_size;
                // one target per lane; every target's sum keeps Brian2's order
                #pragma omp simd
                for (int _i=_first; _i<_last; _i++)
                {
                    const size_t _idx = _block_first + _i;
                    const size_t _vectorisation_idx = _idx;
                    {{vector_code|map('replace', _other_array ~ '[_idx]', _other_array ~ '[_block_first]')|list|autoindent}}
                    _block_target[_i] += _synaptic_var;
                }
            }
        }
    }
    else
    {
        for(int _idx=0; _idx<_n_synapses; _idx++)
        {
            // vector code
            const size_t _vectorisation_idx = _idx;
            {{vector_code|autoindent}}
            {{_target_var_array}}[{{_index_array}}[_idx]] += _synaptic_var;
        }
    }
{% endblock %}
